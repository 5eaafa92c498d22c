"""The frozen prefix, computed once.

With dropout off, embeddings and the frozen blocks ``h0 .. h{k-1}`` are a fixed
function of the token ids, so their output (the input of block k) is computed once
per message and training runs only blocks ``k ..`` plus the final norm and head.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import Block, GPTModel
from gpt2_jax.parallel.mesh import Placement, to_host
from gpt2_jax.training.progress import Progress, wait_ready

logger = logging.getLogger(__name__)

PREFIX_ROWS = 32  # rows per prefix batch when every row has the full width
PREFIX_LAYOUT = 2  # in the cache key: 2 = packed rows, zeros after each text's end


PACK_TOKENS = 4112  # token slots per packed prefix batch (16 rows of 257, 64 of 64, ...)
PACK_WIDTHS = (64, 128)  # narrower rows for shorter texts (less attention), then the full
ESTIMATE_AFTER = 10  # passes of this many batches or more log how long they will take


def unique_texts(ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first, source)``: indices of the first occurrence of each distinct text (its
    real tokens), and for every row the index of the row it repeats (itself if first)."""
    seen: dict[bytes, int] = {}
    source = np.empty(len(ids), np.int64)
    for i, (row, n) in enumerate(zip(ids, lengths)):
        source[i] = seen.setdefault(row[:n].tobytes(), i)
    return np.flatnonzero(source == np.arange(len(ids))), source


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """Texts laid end to end in rows of ``width`` tokens, first-fit in decreasing length.

    ``places[i] = (row, offset)`` of text ``texts[i]``; ``fill`` = real tokens / slots.
    """

    texts: np.ndarray  # [n] which texts (row indices of the data)
    places: np.ndarray  # [n, 2] (row, offset)
    rows: int
    width: int

    @classmethod
    def plan(cls, texts: np.ndarray, lengths: np.ndarray, width: int) -> PackedRows:
        order = texts[np.argsort(-lengths[texts], kind="stable")]
        free: list[int] = []  # free tokens left in each row
        places = np.zeros((len(order), 2), np.int64)
        for i, t in enumerate(order):
            n = int(lengths[t])
            # first row with room (rows fill in order, so scan from the newest few first
            # would change the plan; a plain scan is fast enough for 1e5 texts)
            row = next((r for r, room in enumerate(free) if room >= n), None)
            if row is None:
                free.append(width)
                row = len(free) - 1
            places[i] = (row, width - free[row])
            free[row] -= n
        return cls(order, places, len(free), width)

    def arrays(self, ids: np.ndarray, lengths: np.ndarray, pad_id: int = 0):
        """``(tokens, positions, segments)`` [rows, width] int32. Slots after the texts
        of a row form their own segment (-1), which no text attends to."""
        tokens = np.full((self.rows, self.width), pad_id, np.int32)
        positions = np.zeros((self.rows, self.width), np.int32)
        segments = np.full((self.rows, self.width), -1, np.int32)
        for k, (t, (row, off)) in enumerate(zip(self.texts, self.places)):
            n = int(lengths[t])
            tokens[row, off : off + n] = ids[t, :n]
            positions[row, off : off + n] = np.arange(n)
            segments[row, off : off + n] = k
        return tokens, positions, segments

    def fill(self, lengths: np.ndarray) -> float:
        return float(lengths[self.texts].sum()) / max(1, self.rows * self.width)

    def first_rows(self, rows: int) -> PackedRows:
        """The plan of the texts in rows ``0 .. rows-1`` only: first-fit placed none of
        the others there, so it is the plan those texts alone would get."""
        keep = self.places[:, 0] < rows
        return PackedRows(self.texts[keep], self.places[keep], min(rows, self.rows), self.width)


def pack_groups(
    texts: np.ndarray,
    lengths: np.ndarray,
    full: int,
    batch_rows: int | None = None,
    tokens: int = PACK_TOKENS,
) -> list[tuple[PackedRows, int]]:
    """``(plan, rows per batch)`` per row width: each text goes to the narrowest width of
    ``PACK_WIDTHS`` (then ``full``) that holds it, so short texts are packed into short
    rows and attention spans no more than it must. A group's rows that would only part
    fill its last batch pass their texts on to the next wider group; only the widest
    group's last batch is filled up with repeated rows. A batch holds ``batch_rows``
    rows, or about ``tokens`` token slots."""
    widths = sorted({w for w in PACK_WIDTHS if w < full} | {full})
    groups, carried, low = [], np.zeros(0, texts.dtype), -1
    for i, width in enumerate(widths):
        members = np.concatenate(
            [carried, texts[(lengths[texts] > low) & (lengths[texts] <= width)]]
        )
        low = width
        if not len(members):
            continue
        rows_per_batch = batch_rows or max(1, tokens // width)
        plan = PackedRows.plan(members, lengths, width)
        whole = plan.rows // rows_per_batch * rows_per_batch
        if i < len(widths) - 1 and whole < plan.rows:
            moved = plan.places[:, 0] >= whole
            carried, plan = plan.texts[moved], plan.first_rows(whole)
        else:
            carried = np.zeros(0, texts.dtype)
        if plan.rows:
            groups.append((plan, rows_per_batch))
    return groups


def compute_prefix(
    cfg: GPTConfig,
    params,
    ids: np.ndarray,
    lengths: np.ndarray,
    stop: int,
    *,
    batch_size: int | None = None,
    bucketed: bool = False,
    matmul_dtype: str | None = None,
    desc: str = "prefix",
    out: np.ndarray | None = None,
    placement: Placement | None = None,
) -> np.ndarray:
    """Hidden states entering block ``stop``: [N, L, E] float32.

    Each distinct text is computed once (repeats are copied). ``bucketed`` (only valid
    when no later computation reads padding positions, i.e. last-real pooling): texts
    are packed several to a row (``PackedRows``) so that the blocks see little more
    than the real tokens; positions after a text's end are left zero. Otherwise every
    row is computed at the full width L (its padding positions are read later).
    Progress goes to this module's logger every tenth of the work when no progress bar
    can be shown (output not a terminal, e.g. a logged batch job). ``out``: where to write
    (e.g. a memory-mapped file for data larger than memory). ``placement``: a mesh
    whose devices each compute their share of every batch's rows.
    """
    cfg = dataclasses.replace(cfg, matmul_dtype=matmul_dtype)
    run = functools.partial(prefix_fn(cfg, stop, placement), params)
    if out is None:
        out = np.zeros((*ids.shape, cfg.emb_dim), np.float32)
    first, source = unique_texts(ids, lengths)
    jobs = (
        _packed_jobs(run, ids, lengths, first, out, batch_size, placement)
        if bucketed
        else _full_width_jobs(run, ids, first, out, batch_size, placement)
    )
    run_jobs(jobs, desc)
    for i in np.flatnonzero(source != np.arange(len(ids))):  # repeats: copy the first
        out[i] = out[source[i]]
    return out


@functools.lru_cache(maxsize=8)
def _jitted(cfg: GPTConfig):
    """The jitted embeddings and blocks (with and without LoRA) for ``cfg``, made once per
    config so the splits of a run (and later runs in the process) share their compiles."""
    embed = jax.jit(lambda p, x, pos: GPTModel(cfg).apply({"params": p}, x, stop=0, positions=pos))
    blocks = {
        lora: jax.jit(
            lambda p, x, seg, lora=lora: Block(cfg, lora).apply({"params": p}, x, segments=seg)
        )
        for lora in (False, True)
    }
    return embed, blocks


def prefix_fn(cfg: GPTConfig, stop: int, placement: Placement | None):
    """``run(params, tokens, positions=None, segments=None)``: the embeddings, then one
    jitted block applied ``stop`` times (one block compiles per batch shape instead of the
    whole unrolled prefix)."""
    embed, blocks = _jitted(cfg)

    def run(p, x, pos=None, seg=None):
        if placement is not None:  # rows over the devices; positions and segments follow
            x, pos, seg = (None if a is None else placement.batch(a)[0] for a in (x, pos, seg))
        x = embed(p, x, pos)
        for i in range(stop):
            x = blocks[cfg.has_lora(i)](p[f"h{i}"], x, seg)
        return x

    return run


@dataclasses.dataclass(frozen=True)
class Jobs:
    """The batches of a prefix pass: ``launch(job)`` starts one on the device and
    ``store(job, hidden)`` writes its result where it belongs."""

    jobs: list[Any]
    launch: Callable[[Any], Any]
    store: Callable[[Any, Any], None]


def _packed_jobs(run, ids, lengths, first, out, batch_size, placement) -> Jobs:
    """Texts packed several to a row; a job is (plan, its token arrays, the row indices
    of one batch, rows per batch), and storing cuts each text out of its row."""
    jobs: list[Any] = []
    for plan, rows in pack_groups(first, lengths, ids.shape[1], batch_size):
        rows = _whole_rows(rows, placement)
        arrays = plan.arrays(ids, lengths)
        jobs += [
            (plan, arrays, np.arange(i, min(i + rows, plan.rows)), rows)
            for i in range(0, plan.rows, rows)
        ]

    def launch(job):
        plan, (tokens, positions, segments), idx, rows = job
        take = np.resize(idx, rows)
        return run(tokens[take], positions[take], segments[take])

    def store(job, hidden):
        plan, _, idx, _ = job
        hidden = to_host(hidden)
        for k in np.flatnonzero(np.isin(plan.places[:, 0], idx)):
            t, (row, off) = plan.texts[k], plan.places[k]
            n = int(lengths[t])
            out[t, :n] = hidden[row - idx[0], off : off + n]

    return Jobs(jobs, launch, store)


def _full_width_jobs(run, ids, first, out, batch_size, placement) -> Jobs:
    """Every row at the full width; a job is an array of text indices."""
    rows = _whole_rows(batch_size or PREFIX_ROWS, placement)

    def store(job, hidden):
        out[job] = to_host(hidden)[: len(job)]

    jobs = [first[i : i + rows] for i in range(0, len(first), rows)]
    return Jobs(jobs, lambda job: run(ids[np.resize(job, rows)]), store)


def run_jobs(batches: Jobs, desc: str, logged: bool = True) -> None:
    """Launch the batches with a couple in flight (bounded memory), storing each result
    once it is ready; progress counts stored batches (``logged``: also as log lines when
    no bar can be shown; prediction passes only a bar, its callers report their own)."""
    progress = Progress(
        len(batches.jobs),
        desc,
        log=logger.info if logged else None,
        estimate_after=ESTIMATE_AFTER,
    )
    pending: collections.deque = collections.deque()
    try:
        for job in batches.jobs:
            pending.append((job, batches.launch(job)))
            if len(pending) > 2:  # keep a couple of batches in flight, bound the memory
                _store_when_ready(batches.store, *pending.popleft())
                progress.done()
        while pending:
            _store_when_ready(batches.store, *pending.popleft())
            progress.done()
    finally:
        progress.close()


def _whole_rows(rows: int, placement: Placement | None) -> int:
    """``rows`` rounded up to a multiple of the devices that share a batch."""
    if placement is None:
        return rows
    return -(-rows // placement.rows) * placement.rows


def _store_when_ready(store, job, hidden) -> None:
    """``store(job, hidden)`` once ``hidden`` is computed, waiting in short sleeps (a stop
    is handled at once, not when a long batch ends)."""
    store(job, wait_ready(hidden))
