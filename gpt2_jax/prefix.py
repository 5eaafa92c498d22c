"""The frozen prefix, computed once.

With dropout off, embeddings and the frozen blocks ``h0 .. h{k-1}`` are a fixed
function of the token ids, so their output (the input of block k) is computed once
per message and training runs only blocks ``k ..`` plus the final norm and head.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
from tqdm import tqdm

from .config import GPTConfig
from .model import GPTModel
from .tree import named_leaves

BUCKET_STEP = 32  # batches are padded to a multiple of this many tokens


def first_trainable_block(labels, n_layers: int) -> int:
    """Index of the first block with a trainable leaf (``n_layers`` if none; 0 when an
    embedding trains, since then nothing before block 0 is fixed either)."""
    first = n_layers
    for name, label in named_leaves(labels).items():
        if label != "trainable":
            continue
        top = name.split("/")[0]
        if top in ("wte", "wpe"):
            return 0
        if top.startswith("h") and top[1:].isdigit():
            first = min(first, int(top[1:]))
    return first


def bucket_length(longest: int, full: int, step: int = BUCKET_STEP) -> int:
    """Smallest multiple of ``step`` >= ``longest`` (at most ``full``): few shapes to
    compile, little padding."""
    return min(full, max(step, -(-longest // step) * step))


def compute_prefix(cfg: GPTConfig, params, ids: np.ndarray, lengths: np.ndarray, stop: int,
                   *, batch_size: int = 32, bucketed: bool = False,
                   matmul_dtype: str | None = None, desc: str = "prefix") -> np.ndarray:
    """Hidden states entering block ``stop``: [N, L, E] float32.

    ``bucketed`` (only valid when no later computation reads padding positions, i.e.
    last-real pooling): messages are processed in length order, each batch cut to its
    bucket length; positions past a message's bucket are left zero.
    """
    model = GPTModel(dataclasses.replace(cfg, matmul_dtype=matmul_dtype))
    run = jax.jit(lambda p, x: model.apply({"params": p}, x, stop=stop))
    n, full = ids.shape
    out = np.zeros((n, full, cfg.emb_dim), np.float32)
    order = np.argsort(lengths, kind="stable") if bucketed else np.arange(n)
    for i in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False, disable=None):
        idx = order[i:i + batch_size]
        width = bucket_length(int(lengths[idx].max()), full) if bucketed else full
        rows = np.resize(idx, batch_size)  # fixed batch shape: repeat rows, drop below
        hidden = np.asarray(run(params, ids[rows, :width]))
        out[idx, :width] = hidden[: len(idx)]
    return out
