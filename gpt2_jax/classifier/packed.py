"""Prediction through the training path's machinery: texts packed several to a row.

For pools that read only real tokens (``reads_padding`` false: ``last-real``, ``first``,
``mean`` under causal attention) a batch of today's length buckets still computes many
padding slots. Here, as for training's frozen prefix (``training.prefix``), texts are
laid end to end in rows (``pack_groups``), each position carrying its index within its
own text and the text it belongs to, so attention stays inside a text:

* blocks ``0 .. n-2`` run on the packed rows;
* single-position pools: the last block computes only each text's pooled position
  (``GPTModel(start=n-1, pool_index=...)``) on a window of its row that starts at the
  text's first token; slots after the text's end are other texts' tokens, which the
  causal mask hides from every position the pool reads;
* ``mean``: the last block, ``ln_f`` and the head run on the packed rows too, and each
  text's logits are averaged over its own slots.

Each distinct text is computed once (repeats are copied). The probabilities equal the
unpacked forward's up to float32 rounding.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from gpt2_jax.data.batches import prefix_schedule
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import GPTModel
from gpt2_jax.model.pooling import classify, pool_logits, single_position
from gpt2_jax.parallel.mesh import Placement
from gpt2_jax.training.prefix import (
    Jobs,
    pack_groups,
    prefix_fn,
    run_jobs,
    unique_texts,
)

CHUNK_TEXTS = 4096  # distinct texts planned at a time (first-fit is quadratic in rows)
MIN_TEXTS = 8  # texts per batch are padded to a power of two at least this (few shapes)


def packed_probs(
    cfg: GPTConfig,
    params,
    ids: np.ndarray,
    lengths: np.ndarray,
    pool: str,
    batch_size: int,
    matmul_dtype: str | None = None,
    *,
    multi_label: bool = False,
    placement: Placement | None = None,
) -> np.ndarray:
    """[N, C] class probabilities for encoded ids [N, L] with real lengths [N] (>= 1),
    texts packed into rows; a batch holds about ``batch_tokens(batch_size, L)`` token
    slots. Only for pools that do not read padding. ``placement``: each batch's rows are
    split over its devices (rows rounded up to a multiple of them; ``params`` on its
    mesh already)."""
    cfg = dataclasses.replace(cfg, matmul_dtype=matmul_dtype)
    out = np.zeros((len(ids), cfg.num_classes or 0), np.float32)
    first, source = unique_texts(ids, lengths)
    for i in range(0, len(first), CHUNK_TEXTS):
        chunk = first[i : i + CHUNK_TEXTS]
        run_jobs(
            _jobs(cfg, params, ids, lengths, chunk, pool, batch_size, out, multi_label, placement),
            "classify",
            logged=False,
        )
    return out[source]


def batch_tokens(batch_size: int, full: int) -> int:
    """Token slots per packed batch: those of ``batch_size`` full rows."""
    return batch_size * full


def _rows_run(rows_left: int, rows: int) -> int:
    """Rows a batch computes: ``rows``, or for a group's short last batch the power of two
    that holds what is left (a single text costs one row, not a whole batch)."""
    return min(rows, 1 << (rows_left - 1).bit_length())


def packed_slots(lengths: np.ndarray, full: int, batch_size: int, devices: int = 1) -> int:
    """Token slots the packed path computes in blocks ``0 .. n-2`` for these lengths
    (distinct texts assumed), its rows split over ``devices``: what the benchmark
    compares with the real tokens."""
    slots = 0
    texts = np.arange(len(lengths))
    for i in range(0, len(texts), CHUNK_TEXTS):
        chunk = texts[i : i + CHUNK_TEXTS]
        for plan, rows in pack_groups(chunk, lengths, full, tokens=batch_tokens(batch_size, full)):
            rows = _whole(rows, devices)
            for r in range(0, plan.rows, rows):
                slots += _whole(_rows_run(min(rows, plan.rows - r), rows), devices) * plan.width
    return slots


def bucketed_slots(lengths: np.ndarray, full: int, batch_size: int) -> int:
    """Token slots of the unpacked path (length buckets, full batches) per block."""
    return sum(batch_size * width for _, width in prefix_schedule(lengths, full, batch_size, True))


def _whole(rows: int, devices: int) -> int:
    """``rows`` rounded up to a multiple of the devices that share a batch."""
    return -(-rows // devices) * devices


def _jobs(
    cfg, params, ids, lengths, texts, pool, batch_size, out, multi_label=False, placement=None
) -> Jobs:
    """A job per batch of packed rows: (plan, its arrays, row indices, rows per batch, the
    batch's texts); launching runs the prefix and the tail, storing writes ``out``."""
    mean = not single_position(pool)
    run = functools.partial(prefix_fn(cfg, cfg.n_layers - (0 if mean else 1), placement), params)
    devices = 1 if placement is None else placement.rows
    jobs = []
    for plan, rows in pack_groups(
        texts, lengths, ids.shape[1], tokens=batch_tokens(batch_size, ids.shape[1])
    ):
        rows = _whole(rows, devices)
        arrays = plan.arrays(ids, lengths)
        for r in range(0, plan.rows, rows):
            idx = np.arange(r, min(r + rows, plan.rows))
            jobs.append((plan, arrays, idx, rows, np.flatnonzero(np.isin(plan.places[:, 0], idx))))

    def launch(job):
        plan, (tokens, positions, segments), idx, rows, members = job
        take = np.resize(idx, _whole(_rows_run(len(idx), rows), devices))
        hidden = run(tokens[take], positions[take], segments[take])
        n = max(MIN_TEXTS, 1 << (len(members) - 1).bit_length())
        where = np.zeros((3, n), np.int32)
        where[2] = 1  # padding entries: a one-token text at row 0, results dropped
        where[0, : len(members)] = plan.places[members, 0] - idx[0]
        where[1, : len(members)] = plan.places[members, 1]
        where[2, : len(members)] = lengths[plan.texts[members]]
        return _tail(params, hidden, where, cfg=cfg, pool=pool, multi_label=multi_label)

    def store(job, probs):
        plan, _, _, _, members = job
        out[plan.texts[members]] = np.asarray(probs)[: len(members)]

    return Jobs(jobs, launch, store)


@functools.partial(jax.jit, static_argnames=("cfg", "pool", "multi_label"))
def _tail(params, hidden, where, *, cfg: GPTConfig, pool: str, multi_label: bool = False):
    """Probabilities [T, C] of the texts at ``where = (row, offset, length)`` [3, T] of
    the packed rows ``hidden`` [R, W, E]: hidden states entering the last block (single-
    position pools) or ``ln_f`` (mean). Each text reads a window of its row from its
    first token on; what follows its end there is hidden by the causal mask."""
    row, offset, length = where
    width = hidden.shape[1]
    cols = jnp.minimum(offset[:, None] + jnp.arange(width)[None, :], width - 1)
    model = GPTModel(cfg)
    if single_position(pool):
        x = hidden[row[:, None], cols]  # [T, W, E]
        logits = classify(model, params, x, length, pool, start=cfg.n_layers - 1)
    else:
        every = jnp.asarray(model.apply({"params": params}, hidden, start=cfg.n_layers))
        logits = pool_logits(every[row[:, None], cols], length, pool)
    return jax.nn.sigmoid(logits) if multi_label else jax.nn.softmax(logits, axis=-1)
