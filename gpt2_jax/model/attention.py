"""Attention as functions of arrays: the blocked causal softmax of the CPU
(``causal_attention``), JAX's fused kernel (``fused_attention``), the one-query form with
keys and values absorbed (``pooled_attention``), and ``dot``, the matmul they all use.
``model.gpt``'s modules hold the weights and call these.

Shapes: B = batch, T = sequence length, E = ``emb_dim``, H = ``n_heads``, D = E / H.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gpt2_jax.model.config import GPTConfig


def dot(x, w, dtype, spec: str | None = None):
    """``x @ w`` (or an einsum); with ``dtype`` set the inputs are cast to it and the
    products accumulate in float32 (e.g. bfloat16 inputs, float32 results)."""
    if dtype is not None:
        x, w = x.astype(dtype), w.astype(dtype)
    extra = {} if dtype is None else {"preferred_element_type": jnp.float32}
    if spec is None:
        return jnp.dot(x, w, **extra)
    return jnp.einsum(spec, x, w, **extra)


ATTENTION_BLOCK = 96  # about this many query rows per block in causal_attention


def causal_attention(
    q, k, v, dtype=None, block: int = ATTENTION_BLOCK, segments=None, causal: bool = True
):
    """Causal softmax attention, [B, T, H, D] each -> [B, T, H, D], in blocks of query rows.

    The same function as ``softmax(q kᵀ / √D + causal mask) v``, organised for the CPU:
    heads first (so every product is a plain batched matmul), each block of ``block``
    queries takes only the keys it can see (about half the products of the full square
    for long sequences), and the softmax is normalised after the product with ``v`` (one
    pass less over the scores). Its [B, H, block, T] scores stay small enough for the
    cache. Measured at 124M, batch 16 x 257 on a 2-core Xeon: 53 ms per layer against
    127 ms for the full square with a [B, T, H, D] layout, the earlier code (tests check
    that both agree to float32 rounding).

    ``segments`` [B, T] (packed rows, several texts per row): a position sees only
    earlier positions of its own segment. ``causal=False``: every position sees all.
    """
    b, t, h, d = q.shape
    q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))  # [B, H, T, D]
    q = q / math.sqrt(d)
    size = -(-t // max(1, round(t / block)))  # equal blocks of about `block` rows
    outs = []
    for start in range(0, t, size):
        stop = min(t, start + size) if causal else t
        scores = dot(q[:, :, start : start + size], k[:, :, :stop], dtype, "bhqd,bhkd->bhqk")
        rows, cols = jnp.arange(start, min(t, start + size)), jnp.arange(stop)
        visible = (rows[:, None] >= cols[None, :]) | (not causal)
        if segments is not None:
            visible = visible & (
                segments[:, start : start + size, None] == segments[:, None, :stop]
            )
            visible = visible[:, None]  # [B, 1, q, k]
        scores = jnp.where(visible, scores, jnp.finfo(scores.dtype).min)
        p = jnp.exp(scores - scores.max(axis=-1, keepdims=True))
        out = dot(p, v[:, :, :stop], dtype, "bhqk,bhkd->bhqd")
        outs.append(out / p.sum(axis=-1, keepdims=True))
    return jnp.concatenate(outs, axis=2).transpose(0, 2, 1, 3)


def fused_attention(q, k, v, dtype=None, segments=None, causal: bool = True):
    """``causal_attention`` through ``jax.nn.dot_product_attention``: cuDNN's fused
    (flash) attention on GPUs where JAX can use it, XLA's own code elsewhere. Same
    arguments and result (the tests check they agree on the CPU)."""
    mask = None
    if segments is not None:  # [B, 1, T, T]: a position sees only its own text
        mask = (segments[:, :, None] == segments[:, None, :])[:, None]
    if dtype is not None:
        q, k, v = (a.astype(dtype) for a in (q, k, v))
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal).astype(jnp.float32)


def uses_fused_attention(cfg: GPTConfig) -> bool:
    """``cfg.attention``: "fused" always, "blocked" never, "auto" on GPUs."""
    return cfg.attention == "fused" or (cfg.attention == "auto" and jax.default_backend() == "gpu")


def pooled_attention(
    q,
    n,
    query_index,
    scale,
    shift,
    w_k,
    w_v,
    b_v,
    n_heads: int,
    dtype=None,
    dropout=None,
    causal: bool = True,
):
    """Attention of one query per sequence, with the key and value projections absorbed.

    q [B, E] (already projected); n [B, T, E] the *normalised* rows entering the block,
    so that ln_1's output is ``n * scale + shift`` and a key is ``n W'_k + c_k`` with
    ``W'_k = scale[:, None] * W_k`` (likewise values). For head h:

    * scores: ``q_h . k_t = n_t . (W'_k,h q_h) + q_h . c_k,h``; the last term is the same
      for every t, and softmax ignores it, so it is dropped (its true gradient is zero);
    * output: ``sum_t w_t v_t = (sum_t w_t n_t) W'_v,h + (sum_t w_t) c_v,h``.

    So keys and values are never formed: two [T, E] x [E] products per head replace the
    [T, E] x [E, 2E] projection of every position, E / H = 64 times fewer flops at 124M,
    and autodiff through this form gives the exact gradients of ln_1, c_attn and all
    after them. Positions after ``query_index`` are masked (unless not ``causal``).
    Returns [B, E].
    """
    b, t, e = n.shape
    d = e // n_heads
    q = q.reshape(b, n_heads, d) / math.sqrt(d)
    c_v = (dot(shift, w_v, dtype) + b_v).reshape(n_heads, d)
    w_k = (scale[:, None] * w_k).reshape(e, n_heads, d)
    w_v = (scale[:, None] * w_v).reshape(e, n_heads, d)
    u = dot(q, w_k, dtype, "bhd,ehd->bhe")  # [B, H, E]
    scores = dot(n, u, dtype, "bte,bhe->bht")  # [B, H, T]
    visible = (jnp.arange(t)[None, None, :] <= query_index[:, None, None]) | (not causal)
    weights = jax.nn.softmax(jnp.where(visible, scores, jnp.finfo(scores.dtype).min), axis=-1)
    if dropout is not None:
        weights = dropout(weights)
    mixed = dot(weights, n, dtype, "bht,bte->bhe")  # [B, H, E]
    out = dot(mixed, w_v, dtype, "bhe,ehd->bhd")
    return (out + weights.sum(-1)[..., None] * c_v).reshape(b, e)
