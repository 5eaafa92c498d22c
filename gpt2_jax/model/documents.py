"""One prediction per document from several chunks (``--long-texts chunk``).

Each chunk is pooled as a single text would be (``pooling``: the pooled position of
``ln_f``'s output, or its mean over the real tokens), giving a feature vector [E] per
chunk; the chunks of a document are combined by ``mean`` or ``max`` (per feature), and
the class head reads the combination. With ``mean`` this equals the mean of the chunks'
logits (the head is linear); ``max`` keeps, per feature, the strongest chunk.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt2_jax.model.gpt import LAYER_NORM_EPS, GPTModel
from gpt2_jax.model.pooling import pool_positions, single_position


def chunk_features(
    model: GPTModel, params, x, lengths, pool: str, *, pooled_only: bool = True, **kwargs
):
    """[K, E]: ``ln_f``'s output pooled per chunk of ``x`` (token ids, or hidden states with
    ``start=``), as ``pooling.classify`` reads it before the head. ``pooled_only``: for
    single-position pools the last block computes only that position (exact)."""
    cfg, start = model.cfg, kwargs.get("start", 0)
    width = x.shape[1]
    one = single_position(pool)
    index = pool_positions(lengths, width, pool) if one else None
    pooled = one and pooled_only and start < cfg.n_layers
    hidden = jnp.asarray(
        model.apply(
            {"params": params}, x, stop=cfg.n_layers, pool_index=index if pooled else None, **kwargs
        )
    )
    if pooled:
        hidden = hidden[:, 0]
    elif index is not None:
        hidden = jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]
    normed = jnp.asarray(
        nn.LayerNorm(epsilon=LAYER_NORM_EPS).apply({"params": params["ln_f"]}, hidden)
    )
    if one:
        return normed
    real = (jnp.arange(width)[None, :] < lengths[:, None])[..., None]
    count = jnp.maximum(1, jnp.minimum(lengths, width))[:, None]
    return jnp.sum(jnp.where(real, normed, 0.0), axis=1) / count


def combine(features, doc, n_docs: int, how: str):
    """[N, E]: the features [K, E] of the chunks of each document (``doc`` [K] its slot;
    slots >= ``n_docs`` are padding, ignored) combined by ``mean`` or ``max``."""
    keep = (doc < n_docs)[:, None]
    count = jax.ops.segment_sum(keep[:, 0].astype(features.dtype), doc, num_segments=n_docs)
    if how == "max":
        low = jnp.finfo(features.dtype).min
        top = jax.ops.segment_max(jnp.where(keep, features, low), doc, num_segments=n_docs)
        return jnp.where(count[:, None] > 0, top, 0.0)  # a document without chunks: zeros
    total = jax.ops.segment_sum(jnp.where(keep, features, 0.0), doc, num_segments=n_docs)
    return total / jnp.maximum(count, 1.0)[:, None]


def head_logits(model: GPTModel, params, features):
    """The class head on features [N, E]: logits [N, C]."""
    assert model.cfg.num_classes is not None  # a classifier
    return nn.Dense(model.cfg.num_classes).apply({"params": params["head"]}, features)


def document_logits(model: GPTModel, params, x, lengths, doc, n_docs: int, pool: str, how: str,
                    **kwargs):  # fmt: skip
    """Logits [N, C] of ``n_docs`` documents from their chunks (see the module's docstring)."""
    features = chunk_features(model, params, x, lengths, pool, **kwargs)
    return head_logits(model, params, combine(features, doc, n_docs, how))
