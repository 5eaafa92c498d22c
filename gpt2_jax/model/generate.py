"""Greedy decoding: a quick "does the pretrained model talk" check."""

from __future__ import annotations

import functools
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np

from gpt2_jax.data.batches import bucket_length
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import GPTModel


@functools.partial(jax.jit, static_argnames=("cfg",))
def next_token(params, window, last, *, cfg: GPTConfig):
    """Greedy next token [B] after position ``last`` (traced int) of ``window`` [B, W].

    Compiled once per (window shape, cfg): the weights and ``last`` are arguments, so
    every step of every call with this shape reuses the program. Only position ``last``
    goes through the last block and the LM head (exact: see ``GPTModel``'s
    ``pool_index``), which spares the [B, W, V] logits."""
    index = jnp.full((window.shape[0],), last, jnp.int32)
    # without mutable=, apply returns the module's output alone (no updated variables)
    logits = cast(
        jax.Array, GPTModel(cfg).apply({"params": params}, window, pool_index=index)
    )  # [B, V]
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def generate(model: GPTModel, params, token_ids, max_new_tokens: int) -> np.ndarray:
    """Append ``max_new_tokens`` greedy tokens to ``token_ids`` ([T] or [B, T]).

    Runs on a fixed-size buffer (the text's final length rounded up to a multiple of
    32 tokens, at most ``context_length``), so the forward pass compiles once per
    buffer shape; causality makes the unfilled tail of the buffer irrelevant to the
    position being predicted. Keeps the last ``context_length`` tokens when the text
    grows past it.
    """
    cfg = model.cfg
    if cfg.num_classes is not None:
        raise ValueError(
            f"generate needs a language model (num_classes=None), this one has "
            f"a {cfg.num_classes}-class head"
        )
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    ids = np.asarray(token_ids, dtype=np.int32)
    squeeze = ids.ndim == 1
    ids = np.atleast_2d(ids)
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"token_ids must be [T] or [B, T] with T >= 1, got shape {ids.shape}")
    width = bucket_length(ids.shape[1] + max_new_tokens, cfg.context_length)
    # Once, not at every step; committed, so restored and fresh weights share a cache key.
    params = jax.device_put(params, jax.devices()[0])
    for _ in range(max_new_tokens):
        window = ids[:, -width:]
        n = window.shape[1]
        buffer = np.zeros((ids.shape[0], width), np.int32)
        buffer[:, :n] = window
        new = np.asarray(next_token(params, buffer, n - 1, cfg=cfg))
        ids = np.concatenate([ids, new[:, None]], axis=1)
    return ids[0] if squeeze else ids


def generate_text(model: GPTModel, params, tokenizer, prompt: str, max_new_tokens: int = 20) -> str:
    ids = tokenizer.encode(prompt, allowed_special={"<|endoftext|>"})
    return tokenizer.decode(generate(model, params, ids, max_new_tokens).tolist())
