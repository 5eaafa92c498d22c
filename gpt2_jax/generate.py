"""Greedy decoding: a quick "does the pretrained model talk" check."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .model import GPTModel


def generate(model: GPTModel, params, token_ids, max_new_tokens: int) -> np.ndarray:
    """Append ``max_new_tokens`` greedy tokens to ``token_ids`` ([T] or [B, T]).

    Runs on a fixed-size buffer, so the forward pass compiles once; causality makes
    the unfilled tail of the buffer irrelevant to the position being predicted.
    Keeps the last ``context_length`` tokens when the text grows past it.
    """
    ids = np.asarray(token_ids, dtype=np.int32)
    squeeze = ids.ndim == 1
    ids = np.atleast_2d(ids)
    ctx = model.cfg.context_length
    width = min(ctx, ids.shape[1] + max_new_tokens)

    @jax.jit
    def next_token(window, last):
        logits = model.apply({"params": params}, window)
        return jnp.argmax(logits[:, last, :], axis=-1).astype(jnp.int32)

    for _ in range(max_new_tokens):
        window = ids[:, -width:]
        n = window.shape[1]
        buffer = np.zeros((ids.shape[0], width), np.int32)
        buffer[:, :n] = window
        new = np.asarray(next_token(buffer, n - 1))
        ids = np.concatenate([ids, new[:, None]], axis=1)
    return ids[0] if squeeze else ids


def generate_text(model: GPTModel, params, tokenizer, prompt: str, max_new_tokens: int = 20) -> str:
    ids = tokenizer.encode(prompt, allowed_special={"<|endoftext|>"})
    return tokenizer.decode(generate(model, params, ids, max_new_tokens).tolist())
