"""Prediction for a classifier that chunks long texts (``ClassifierConfig.chunking``):
each text is cut as in training (``data.chunks``), its chunks are pooled and combined
(``model.documents``), and the head reads the combination: one row per text."""

from __future__ import annotations

import numpy as np

from gpt2_jax.classifier.classifier import checked_tokens
from gpt2_jax.classifier.spec import ClassifierConfig, is_int
from gpt2_jax.data.chunks import encode_chunks
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.pooling import reads_padding
from gpt2_jax.training.chunked import chunked_logits


def document_probs(
    spec: ClassifierConfig,
    params,
    tokenizer,
    texts: list[str],
    batch_size: int,
    cfg: GPTConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities [N, C], truncated [N] bool)`` for checked ``texts``; truncated: a
    text longer than its ``max_chunks`` chunks hold (only those were read). ``cfg``: the
    model config computed (``spec.model`` with another ``matmul_dtype``), default
    ``spec.model``."""
    if not is_int(batch_size) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    c, cfg = spec.chunking, cfg or spec.model
    assert c is not None
    tokens = checked_tokens(tokenizer, texts, cfg.vocab_size)
    data = encode_chunks(tokens, np.zeros(len(texts)), c)
    truncated = np.array([len(t) > c.covered for t in tokens], bool)
    if not len(texts):
        return np.zeros((0, spec.num_classes), np.float32), truncated
    padded = reads_padding(spec.pool, cfg.causal)
    logits = np.asarray(chunked_logits(cfg, params, data, spec.pool, c.pool, batch_size, padded))
    return _softmax(logits), truncated


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax on the host (in JAX, run op by op, it compiled once per number of
    texts, which a server's warm-up would have to cover count by count)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)
