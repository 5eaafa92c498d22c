"""Which position of a sequence the classifier reads: part of what a classifier *is*
(saved with it), used alike by training, evaluation and prediction."""
from __future__ import annotations

import jax.numpy as jnp

POOLS = ("last", "last-real")


def check_pool(pool: str) -> str:
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    return pool


def pool_positions(lengths, width: int, pool: str):
    """[B] positions read by the classifier: the last one ("last", the lab's) or the
    last real token ("last-real")."""
    if pool == "last":
        return jnp.full(lengths.shape, width - 1, jnp.int32)
    return jnp.clip(lengths - 1, 0, width - 1).astype(jnp.int32)


def pool_logits(logits, lengths, pool: str):
    """[B, T, C] -> [B, C] at ``pool_positions``."""
    index = pool_positions(lengths, logits.shape[1], pool)
    return jnp.take_along_axis(logits, index[:, None, None], axis=1)[:, 0, :]
