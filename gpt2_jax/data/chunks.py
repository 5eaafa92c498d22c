"""Texts longer than the context, cut into overlapping chunks (``--long-texts chunk``).

A document of ``n`` tokens becomes windows of ``length`` tokens that start ``stride``
tokens apart, the last one ending at the document's end: ``0, stride, 2 stride, ..``
while a window ends before the document does, then ``n - length``. Every chunk but a
short document's only one is ``length`` tokens long. A document yields at most
``max_chunks`` chunks (its first ``length + (max_chunks - 1) stride`` tokens); the rest
is left out and counted, as truncation is. So one document costs at most
``max_chunks`` rows whatever its length, and a split at most ``max_chunks`` times its
documents.

``Chunked`` is an ``Encoded`` whose ``ids`` and ``lengths`` are the chunks' (what the
frozen prefix computes, packed like any texts) and whose ``labels`` are the documents'
(``len`` counts documents: batches, losses and metrics are per document).
``spans[d] : spans[d + 1]`` are document ``d``'s chunks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from gpt2_jax.data.encoding import PAD_ID, Encoded, run_length, split_tokens

LONG_TEXTS = ("truncate", "chunk")
CHUNK_POOLS = ("mean", "max")
MAX_CHUNKS = 16  # default chunks per document


@dataclasses.dataclass(frozen=True)
class Chunking:
    """How a long text is cut and its chunks' features aggregated (saved with the
    classifier): chunks of ``length`` tokens every ``stride`` tokens, at most
    ``max_chunks`` per text, pooled features combined by ``pool`` (``mean`` or ``max``)."""

    length: int
    stride: int
    pool: str = "mean"
    max_chunks: int = MAX_CHUNKS

    def __post_init__(self):
        for name in ("length", "stride", "max_chunks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"chunking: {name} must be a positive int, got {value!r}")
        if self.stride > self.length:
            raise ValueError(
                f"chunking: stride {self.stride} > chunk length {self.length} would skip "
                "tokens between chunks; use a stride of at most the chunk length"
            )
        check_chunk_pool(self.pool)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d) -> Chunking:
        if not isinstance(d, dict) or set(d) != {f.name for f in dataclasses.fields(cls)}:
            raise ValueError(f"key 'chunking' must be an object of length, stride, pool, "
                             f"max_chunks; got {d!r}")  # fmt: skip
        return cls(**d)

    @property
    def covered(self) -> int:
        """Tokens of a document that its chunks can hold."""
        return self.length + (self.max_chunks - 1) * self.stride


def check_chunk_pool(pool: str) -> str:
    if pool not in CHUNK_POOLS:
        raise ValueError(f"chunk pool must be one of {CHUNK_POOLS}, got {pool!r}")
    return pool


def check_long_texts(how: str) -> str:
    if how not in LONG_TEXTS:
        raise ValueError(f"long_texts must be one of {LONG_TEXTS}, got {how!r}")
    return how


def chunk_starts(n: int, c: Chunking) -> np.ndarray:
    """Where the chunks of a document of ``n`` tokens start (at most ``c.max_chunks``)."""
    if n <= c.length:
        return np.zeros(1, np.int64)
    starts = np.append(np.arange(0, n - c.length, c.stride), n - c.length)
    return starts[: c.max_chunks]


@dataclasses.dataclass(frozen=True)
class Chunked(Encoded):
    """Chunks of documents: ``ids`` [K, L] and ``lengths`` [K] per chunk, ``labels`` [N]
    per document, ``spans`` [N + 1] (document d's chunks are ``spans[d]:spans[d+1]``),
    ``truncated``: documents longer than their chunks hold, ``chunked``: documents cut
    into more than one chunk."""

    spans: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(1, np.int64))
    chunked: int = 0

    @property
    def chunks(self) -> int:
        return len(self.ids)

    def counts(self) -> np.ndarray:
        """[N] chunks of each document."""
        return np.diff(self.spans)

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(chunk rows, document slot)`` of the documents ``docs`` in order: the rows of
        ``docs[i]``'s chunks, each tagged ``i``."""
        counts = self.counts()[docs]
        rows = np.concatenate([np.arange(self.spans[d], self.spans[d + 1]) for d in docs])
        return rows, np.repeat(np.arange(len(docs)), counts)


def encode_chunks(tokens: list[list[int]], labels, c: Chunking) -> Chunked:
    """Each document's chunks (see the module's docstring), right-padded to ``c.length``."""
    starts = [chunk_starts(len(t), c) for t in tokens]
    spans = np.concatenate([[0], np.cumsum([len(s) for s in starts])]).astype(np.int64)
    ids = np.full((int(spans[-1]), c.length), PAD_ID, np.int32)
    lengths = np.zeros(int(spans[-1]), np.int32)
    row = 0
    for toks, where in zip(tokens, starts):
        for s in where:
            piece = toks[s : s + c.length]
            ids[row, : len(piece)] = piece
            lengths[row] = len(piece)
            row += 1
    truncated = sum(len(t) > c.covered for t in tokens)
    chunked = sum(len(t) > c.length for t in tokens)
    return Chunked(ids, lengths, np.asarray(labels, np.int32), truncated, spans, chunked)


def chunk_words(split: Chunked, c: Chunking) -> str:
    """A split's chunking in words, for the log."""
    words = (
        f"{split.chunked} of {len(split)} texts longer than {c.length} tokens cut into "
        f"{split.chunks} chunks in all (every {c.stride} tokens)"
    )
    if split.truncated:
        words += f"; {split.truncated} longer than {c.covered} tokens keep their first {c.max_chunks} chunks"
    return words


def chunk_splits(
    splits, tokenizer, context_length: int, max_length: int | None, vocab_size: int | None,
    chunking: Callable[[int], Chunking | None],
) -> tuple[dict[str, Chunked], Chunking]:  # fmt: skip
    """Every split's documents as chunks: ``chunking(length)`` (``length``: the run's max
    length as ``encode_splits`` finds it) says how; chunks longer than the model's
    context are refused in one line."""
    tokens = split_tokens(splits, tokenizer, vocab_size)
    c = chunking(run_length(tokens, context_length, max_length))
    assert c is not None
    if c.length > context_length:
        raise ValueError(
            f"--chunk-length {c.length} is more than the model's context of "
            f"{context_length} tokens; use at most {context_length}"
        )
    return {name: encode_chunks(tokens[name], df["y"].to_numpy(), c)
            for name, df in splits.items()}, c  # fmt: skip


def chunking_line(c: Chunking) -> str:
    """How a run chunks, for the log."""
    return (
        f"long texts: chunks of {c.length} tokens every {c.stride} tokens, at most "
        f"{c.max_chunks} per text; each text's prediction reads the {c.pool} of its chunks' "
        "pooled features (--long-texts chunk)"
    )
