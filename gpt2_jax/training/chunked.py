"""Training and evaluation on documents cut into chunks (``--long-texts chunk``).

The frozen prefix is computed per chunk, packed like any texts (``training.prefix``:
a ``Chunked`` split's ``ids`` are its chunks). A batch is ``batch_size`` documents:
``ChunkTrainer.rows`` gathers their chunks (padded to a power of two, padding tagged
with no document), the step pools each chunk, combines each document's chunks
(``model.documents``) and applies the head, so the loss, the gradients and the metrics
are per document. Everything else (``train_epoch``, ``evaluate``, ``fit``) is the
single-text loop, which asks the trainer for its batches.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import numpy as np

from gpt2_jax.data.chunks import Chunked, check_chunk_pool
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.documents import document_logits
from gpt2_jax.model.gpt import GPTModel
from gpt2_jax.training.train import Trainer, batch_width


class ChunkBatch(NamedTuple):
    x: Any  # [K, T] token ids or [K, T, E] hidden states of the chunks
    lengths: Any  # [K] real tokens per chunk
    labels: Any  # [B] class ids of the documents
    doc: Any  # [K] which document (0..B-1) each chunk belongs to; B: padding


def chunk_rows(data: Chunked, docs: np.ndarray, multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(chunk rows, document slot)`` of the documents ``docs``, padded to a power of two
    (at least ``len(docs)``, a multiple of ``multiple``) with copies of the first row in
    slot ``len(docs)``: few shapes to compile."""
    rows, doc = data.gather(docs)
    k = max(len(docs), 1 << (len(rows) - 1).bit_length())
    k = -(-k // multiple) * multiple
    pad = k - len(rows)
    return (
        np.concatenate([rows, np.full(pad, rows[0], rows.dtype)]),
        np.concatenate([doc, np.full(pad, len(docs), doc.dtype)]),
    )


class ChunkTrainer(Trainer):
    """``Trainer`` whose batches are documents made of chunks; ``how``: ``mean`` or ``max``
    of the chunks' pooled features."""

    def __init__(self, *args, how: str = "mean", **kwargs):
        super().__init__(*args, **kwargs)
        self.how = check_chunk_pool(how)

    def rows(self, x, data, idx, bucketed: bool) -> ChunkBatch:  # type: ignore[override]
        multiple = 1 if self.placement is None else self.placement.rows
        rows, doc = chunk_rows(data, idx, multiple)
        width = batch_width(data.lengths[rows], x.shape[1], bucketed)
        chunks = (x[rows, :width], data.lengths[rows], doc)
        if self.placement is not None:
            chunks = self.placement.batch(*chunks)
            return ChunkBatch(chunks[0], chunks[1], self.placement.batch(data.labels[idx])[0],
                              chunks[2])  # fmt: skip
        return ChunkBatch(chunks[0], chunks[1], data.labels[idx], doc)

    def eval_order(self, data, bucketed: bool) -> np.ndarray:
        """Documents with few chunks first when bucketed (batches of like sizes)."""
        n = len(data)
        return np.argsort(data.counts(), kind="stable") if bucketed else np.arange(n)

    def logits(self, params, batch, rng=None):
        return document_logits(
            self.model,
            params,
            batch.x,
            batch.lengths,
            batch.doc,
            batch.labels.shape[0],
            self.pool,
            self.how,
            pooled_only=self.pooled_only,
            deterministic=rng is None,
            start=self.start,
            rngs={} if rng is None else {"dropout": rng},
        )


@functools.partial(jax.jit, static_argnames=("cfg", "pool", "how", "n_docs"))
def _document_logits(params, ids, lengths, doc, *, cfg: GPTConfig, pool: str, how: str,
                     n_docs: int):  # fmt: skip
    return document_logits(GPTModel(cfg), params, ids, lengths, doc, n_docs, pool, how)


def document_groups(counts: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Documents in order, in groups of at most ``batch_size`` documents and at most
    ``batch_size`` chunks (or one document's, when it alone has more): each call
    computes about as many rows as a batch of single texts."""
    groups: list[np.ndarray] = []
    current: list[int] = []
    held = 0
    for d, n in enumerate(counts):
        if current and (len(current) == batch_size or held + n > batch_size):
            groups.append(np.array(current))
            current, held = [], 0
        current.append(d)
        held += int(n)
    if current:
        groups.append(np.array(current))
    return groups


def chunked_logits(
    cfg: GPTConfig, params, data: Chunked, pool: str, how: str, batch_size: int, padded: bool
) -> np.ndarray:
    """Logits [N, C] of every document of ``data`` (token ids), a group of documents
    (``document_groups``) per call; ``padded``: the pool reads padding, so chunks keep
    the full width (otherwise each call is cut to its longest chunk's bucket)."""
    out = np.zeros((len(data), cfg.num_classes or 0), np.float32)
    for docs in document_groups(data.counts(), batch_size):
        n_docs = max(8, 1 << (len(docs) - 1).bit_length())  # few shapes to compile
        rows, doc = data.gather(docs)
        k = max(n_docs, 1 << (len(rows) - 1).bit_length())
        rows = np.resize(rows, k)
        doc = np.concatenate([doc, np.full(k - len(doc), n_docs, doc.dtype)])
        width = batch_width(data.lengths[rows], data.ids.shape[1], not padded)
        got = _document_logits(
            params, data.ids[rows, :width], data.lengths[rows], doc,
            cfg=cfg, pool=pool, how=how, n_docs=n_docs,
        )  # fmt: skip
        out[docs] = np.asarray(got)[: len(docs)]
    return out
