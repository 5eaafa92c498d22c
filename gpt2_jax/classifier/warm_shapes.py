"""The programs a classifier's ``predict`` calls compile, and a few calls that compile
them all (a server's warm-up: ``serve.server.warm_up``).

What a call ``predict(texts, batch_size)`` compiles depends on its path and on the
token lengths of its distinct texts (repeats are computed once):

* packed rows (pools that read only real tokens, ``classifier.packed``): per batch of
  rows, its width, the rows it computes (``_rows_run``) and the texts its tail reads (a
  power of two, at least ``MIN_TEXTS``);
* full-width rows (pools that read padding, ``"last"``): the batch's rows;
* documents cut into chunks (``classifier.documents``): per group of documents, its
  chunk rows, width and document slots.

``call_shapes`` plans a call with the functions prediction plans with (``pack_groups``,
``prefix_schedule``, ``document_groups``) without running the model. ``warm_calls``
plans small families of lengths for the text counts a server's calls can have, and
keeps the calls that add a shape; ``warm_up`` runs them on generated distinct texts of
those lengths. Trying every count is cubic in the largest (minutes at 512), so counts
are sampled (``counts``): all up to 16, then ``2^k - 1``, ``2^k`` and ``2^k + 1``. Why
that suffices today: a batch of ``batch_size × max_length`` token slots holds any call
of at most ``batch_size`` texts in one packed group, so a shape is set by how many rows
and texts that group has, each rounded up to a power of two (at least 8 texts); every
class ``(2^(k-1), 2^k]`` holds the sampled ``2^(k-1) + 1`` and ``2^k``, and the small
classes, where ``max(8, .)`` and ``_rows_run`` round, are tried in full. The rows a
family of lengths fills do not change only at powers of two, so this is an argument
about the rounding, not a proof: tests (tests/serve/test_warm_up.py) check that the
sampled plan finds every shape the exhaustive one finds, that random calls' shapes are
among them, and that varied calls after the warm-up compile nothing, so a change in the
rounding or the planning shows there.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping

import numpy as np

from gpt2_jax.classifier.packed import MIN_TEXTS, _rows_run, batch_tokens
from gpt2_jax.classifier.spec import ClassifierConfig
from gpt2_jax.data.batches import BUCKET_STEP, bucket_length, prefix_schedule
from gpt2_jax.data.chunks import Chunking, chunk_starts
from gpt2_jax.model.pooling import reads_padding
from gpt2_jax.training.chunked import document_groups
from gpt2_jax.training.prefix import PACK_WIDTHS, pack_groups

Shape = tuple


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def call_shapes(spec: ClassifierConfig, lengths: list[int], batch_size: int) -> set[Shape]:
    """The shapes ``predict`` computes for distinct texts of these token ``lengths`` (>= 1,
    as tokenized, before truncation) with ``batch_size``."""
    if spec.chunking is not None:
        padded = reads_padding(spec.pool, spec.model.causal)
        return _document_shapes(lengths, spec.chunking, batch_size, padded)
    cut = np.minimum(np.asarray(lengths, np.int64), spec.max_length)
    if reads_padding(spec.pool, spec.model.causal):
        schedule = prefix_schedule(cut, spec.max_length, batch_size, False, BUCKET_STEP)
        return {("rows", batch_size, width) for _, width in schedule}
    return _packed_shapes(cut, spec.max_length, batch_size)


def _packed_shapes(lengths: np.ndarray, full: int, batch_size: int) -> set[Shape]:
    """(width, rows computed, tail texts) of each batch of packed rows (``packed._jobs``)."""
    shapes = set()
    texts = np.arange(len(lengths))
    for plan, rows in pack_groups(texts, lengths, full, tokens=batch_tokens(batch_size, full)):
        for r in range(0, plan.rows, rows):
            n_rows = min(rows, plan.rows - r)
            row = plan.places[:, 0]
            members = int(np.count_nonzero((row >= r) & (row < r + n_rows)))
            tail = max(MIN_TEXTS, _pow2(members))
            shapes.add(("packed", plan.width, _rows_run(n_rows, rows), tail))
    return shapes


def _document_shapes(lengths, c: Chunking, batch_size: int, padded: bool) -> set[Shape]:
    """(chunk rows, width, document slots) of each call of ``chunked_logits``."""
    counts = np.array([_chunks(int(n), c) for n in lengths], np.int64)
    widest = np.minimum(np.asarray(lengths, np.int64), c.length)  # longest chunk of each
    shapes = set()
    for docs in document_groups(counts, batch_size):
        n_docs = max(8, _pow2(len(docs)))
        rows = max(n_docs, _pow2(int(counts[docs].sum())))
        longest = int(widest[docs].max())
        width = c.length if padded else bucket_length(longest, c.length)
        shapes.add(("documents", rows, width, n_docs))
    return shapes


@functools.lru_cache(maxsize=4096)
def _chunks(n: int, c: Chunking) -> int:
    return len(chunk_starts(n, c))


DENSE = 16  # counts up to this are all tried


def counts(top: int, exhaustive: bool = False) -> list[int]:
    """The counts ``1 .. top`` the planner tries: all of them if ``exhaustive``, else all
    up to ``DENSE``, ``2^k - 1``, ``2^k`` and ``2^k + 1``, and ``top`` (each power-of-two
    class of rows and texts is reached; see the module's docstring)."""
    if exhaustive:
        return list(range(1, top + 1))
    picked = set(range(1, min(top, DENSE) + 1)) | {top}
    k = 2
    while k <= top:
        picked |= {k - 1, k, k + 1}
        k *= 2
    return sorted(v for v in picked if v <= top)


def candidates(spec: ClassifierConfig, n: int, exhaustive: bool = False) -> Iterator[list[int]]:
    """Token lengths of ``n`` texts in families that reach every shape of the path:
    packed, ``rows`` anchors per row width with the rest one-token texts in their slack;
    chunks, ``a`` documents of ``q`` chunks with full single chunks after them (``rows``
    and ``a`` sampled as by ``counts``)."""
    full = spec.max_length
    if spec.chunking is not None:
        c = spec.chunking
        for width in range(BUCKET_STEP, c.length + BUCKET_STEP, BUCKET_STEP):
            yield [min(width, c.length)] * n
        for q in range(2, c.max_chunks + 1):
            for a in counts(n, exhaustive):
                yield [c.length + (q - 1) * c.stride] * a + [c.length] * (n - a)
        return
    if reads_padding(spec.pool, spec.model.causal):
        yield [full] * n
        return
    yield [1] * n
    for width in sorted({w for w in PACK_WIDTHS if w < full} | {full}):
        yield [width] * n
        for rows in counts(n, exhaustive):
            anchor = width - -(-(n - rows) // rows)  # the rest fit in the rows' slack
            if anchor >= 1:
                yield [anchor] * rows + [1] * (n - rows)


def warm_calls(
    spec: ClassifierConfig, batch_sizes: Mapping[int, int], exhaustive: bool = False
) -> tuple[list[tuple[list[int], int]], set[Shape]]:
    """``(calls, shapes)``: calls ``(token lengths, batch_size)`` that together compute
    every shape of ``shapes``, those of any call of at most ``max(batch_sizes)`` texts
    where ``batch_sizes[n]`` is the batch size of a call of ``n`` texts. A call's
    distinct texts may be fewer than ``n`` (repeats), with the same batch size. Text
    counts are sampled (``counts``); ``exhaustive`` tries every one (the tests'
    reference)."""
    most: dict[int, int] = {}  # batch size -> most texts a call with it holds
    for n, size in batch_sizes.items():
        most[size] = max(most.get(size, 0), n)
    calls: list[tuple[list[int], int]] = []
    shapes: set[Shape] = set()
    for size, top in sorted(most.items()):
        for n in counts(top, exhaustive):
            for lengths in candidates(spec, n, exhaustive):
                new = call_shapes(spec, lengths, size) - shapes
                if new:
                    calls.append((lengths, size))
                    shapes |= new
    return calls, shapes


WORD = re.compile(r" [a-z]{3,}")  # a token that is a space and a word encodes to itself


@functools.lru_cache(maxsize=8)
def _words(tokenizer, vocab_size: int, need: int) -> tuple[int, ...]:
    """Ids of ``need`` tokens that are a space and a lower-case word, each its own token."""
    words: list[int] = []
    for i in range(vocab_size):
        text = tokenizer.decode([i])
        if WORD.fullmatch(text) and tokenizer.encode(text) == [i]:
            words.append(i)
            if len(words) == need:
                return tuple(words)
    raise ValueError(
        f"the tokenizer has {len(words)} single-token words below id {vocab_size}, and the "
        f"warm-up needs {need} distinct one-token texts; serve with --no-warm-up"
    )


def texts_of_lengths(tokenizer, lengths: list[int], vocab_size: int) -> list[str]:
    """Distinct texts of exactly these token lengths (word ``i`` first, then a filler)."""
    words = _words(tokenizer, vocab_size, max(len(lengths), 2))
    texts = []
    for i, n in enumerate(lengths):
        ids = [words[i]] + [words[(i + 1) % len(words)]] * (n - 1)
        text = tokenizer.decode(ids)
        if len(tokenizer.encode(text)) != n:
            raise ValueError(f"the warm-up's text of {n} tokens encodes to another length")
        texts.append(text)
    return texts


def warm_up(classifier, batch_sizes: Mapping[int, int]) -> int:
    """Compile every shape a call of ``n`` texts (``n`` a key of ``batch_sizes``) with
    ``batch_sizes[n]`` as its batch size can need. Returns the number of shapes."""
    spec = classifier.spec
    calls, shapes = warm_calls(spec, batch_sizes)
    for lengths, size in calls:
        texts = texts_of_lengths(classifier.tokenizer, lengths, spec.model.vocab_size)
        classifier.predict(texts, batch_size=size)
    return len(shapes)
