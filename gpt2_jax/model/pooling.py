"""Which position(s) of a sequence the classifier reads: part of what a classifier *is*
(saved with it), used alike by training, evaluation and prediction.

* ``last``: the last position of the padded row (the lab's; reads padding);
* ``last-real``: the last real token (what Hugging Face's GPT-2 classifier reads);
* ``first``: the first token (it sees only itself under the causal mask);
* ``mean``: the mean of the logits over the real tokens (the book's
  ``--average_embeddings``, without the padding; the head is linear, so this is the
  head applied to the mean of the final hidden states).
"""

from __future__ import annotations

import jax.numpy as jnp

POOLS = ("last", "last-real", "first", "mean")
POOL_WORDS = {  # for a run's log
    "last": "the last position of the padded row (the lab's; padding included)",
    "last-real": "each text's last real token (padding plays no part)",
    "first": "the first token",
    "mean": "the mean over each text's real tokens",
}


def check_pool(pool: str) -> str:
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    return pool


def reads_padding(pool: str, causal: bool = True) -> bool:
    """Whether the result depends on padding positions (then rows keep their full width:
    no length buckets, no packing): with "last", or when attention is not causal (then
    every token sees the padding after it)."""
    return pool == "last" or not causal


def single_position(pool: str) -> bool:
    """Whether one position per row is read (then the last block can compute only it)."""
    return pool != "mean"


def pool_positions(lengths, width: int, pool: str):
    """[B] positions read by the classifier for a single-position ``pool``."""
    if pool == "last":
        return jnp.full(lengths.shape, width - 1, jnp.int32)
    if pool == "first":
        return jnp.zeros(lengths.shape, jnp.int32)
    if pool == "last-real":
        return jnp.clip(lengths - 1, 0, width - 1).astype(jnp.int32)
    raise ValueError(f"pool {pool!r} reads more than one position")


def pool_logits(logits, lengths, pool: str):
    """[B, T, C] -> [B, C]: the pooled position, or the mean over the real tokens."""
    if pool == "mean":
        real = (jnp.arange(logits.shape[1])[None, :] < lengths[:, None])[..., None]
        count = jnp.maximum(1, jnp.minimum(lengths, logits.shape[1]))[:, None]
        return jnp.sum(jnp.where(real, logits, 0.0), axis=1) / count
    index = pool_positions(lengths, logits.shape[1], pool)
    return jnp.take_along_axis(logits, index[:, None, None], axis=1)[:, 0, :]


def classify(model, params, x, lengths, pool: str, *, pooled_only: bool = True, **kwargs):
    """Logits [B, C] of ``model`` on inputs ``x`` (token ids, or hidden states with
    ``start=``) read as ``pool`` says. ``pooled_only``: for single-position pools the
    last block computes only that position (exact); otherwise the full output is pooled.
    ``kwargs`` go to ``model.apply`` (``start``, ``deterministic``, ``rngs``)."""
    if pooled_only and single_position(pool):
        index = pool_positions(lengths, x.shape[1], pool)
        return model.apply({"params": params}, x, pool_index=index, **kwargs)
    return pool_logits(model.apply({"params": params}, x, **kwargs), lengths, pool)
