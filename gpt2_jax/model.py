"""GPT-2 as ``flax.linen`` modules.

Submodules carry the names of OpenAI's TensorFlow scopes (``wte``, ``wpe``, ``h0`` …
``h{n-1}``, ``ln_1``, ``attn/c_attn``, ``attn/c_proj``, ``ln_2``, ``mlp/c_fc``,
``mlp/c_proj``, ``ln_f``), so a parameter path such as ``h11/attn/c_attn/kernel``
names the same weights as ``model/h11/attn/c_attn/w`` in the checkpoint.

Shapes: B = batch, T = sequence length, E = ``emb_dim``, H = ``n_heads``,
D = E / H, V = ``vocab_size``, C = ``num_classes``.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from .config import GPTConfig

LAYER_NORM_EPS = 1e-5  # GPT-2's value (flax's default is 1e-6)
_init = nn.initializers.normal(stddev=0.02)


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS, name=name)


class CausalSelfAttention(nn.Module):
    cfg: GPTConfig

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        """[B, T, E] -> [B, T, E]; position t attends to positions <= t."""
        cfg = self.cfg
        b, t, e = x.shape
        qkv = nn.Dense(3 * e, use_bias=cfg.qkv_bias, kernel_init=_init, name="c_attn")(x)
        q, k, v = (a.reshape(b, t, cfg.n_heads, cfg.head_dim) for a in jnp.split(qkv, 3, -1))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(cfg.head_dim)
        causal = jnp.tril(jnp.ones((t, t), dtype=bool))
        scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1)
        weights = nn.Dropout(cfg.drop_rate)(weights, deterministic=deterministic)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, e)
        out = nn.Dense(e, kernel_init=_init, name="c_proj")(out)
        return nn.Dropout(cfg.drop_rate)(out, deterministic=deterministic)


class MLP(nn.Module):
    cfg: GPTConfig

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        """[B, T, E] -> [B, T, E] through a 4E hidden layer with tanh-approximated GELU."""
        e = self.cfg.emb_dim
        h = nn.Dense(4 * e, kernel_init=_init, name="c_fc")(x)
        h = jax.nn.gelu(h, approximate=True)
        h = nn.Dense(e, kernel_init=_init, name="c_proj")(h)
        return nn.Dropout(self.cfg.drop_rate)(h, deterministic=deterministic)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    cfg: GPTConfig

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        x = x + CausalSelfAttention(self.cfg, name="attn")(_layer_norm("ln_1")(x), deterministic)
        x = x + MLP(self.cfg, name="mlp")(_layer_norm("ln_2")(x), deterministic)
        return x


class GPTModel(nn.Module):
    """GPT-2: token ids [B, T] -> logits [B, T, V] (or [B, T, C] with a class head).

    Dropout is active only when ``deterministic=False``; then ``apply`` needs a
    ``"dropout"`` rng.
    """

    cfg: GPTConfig

    @nn.compact
    def __call__(self, token_ids: jax.Array, deterministic: bool = True) -> jax.Array:
        cfg = self.cfg
        t = token_ids.shape[-1]
        if t > cfg.context_length:
            raise ValueError(
                f"sequence length {t} exceeds the model's context_length {cfg.context_length}"
            )
        wte = nn.Embed(cfg.vocab_size, cfg.emb_dim, embedding_init=_init, name="wte")
        wpe = nn.Embed(cfg.context_length, cfg.emb_dim,
                       embedding_init=nn.initializers.normal(0.01), name="wpe")
        x = wte(token_ids) + wpe(jnp.arange(t))
        x = nn.Dropout(cfg.drop_rate)(x, deterministic=deterministic)
        for i in range(cfg.n_layers):
            x = Block(cfg, name=f"h{i}")(x, deterministic)
        x = _layer_norm("ln_f")(x)
        if cfg.num_classes is None:
            return wte.attend(x)  # output head tied to the token embedding
        return nn.Dense(cfg.num_classes, kernel_init=_init, name="head")(x)


def init_params(cfg: GPTConfig, seed: int = 0, seq_len: int = 8) -> dict:
    """Random parameters for ``GPTModel(cfg)`` (GPT-2's normal(0.02) init)."""
    dummy = jnp.zeros((1, min(seq_len, cfg.context_length)), jnp.int32)
    return GPTModel(cfg).init(jax.random.PRNGKey(seed), dummy)["params"]


def param_shapes(cfg: GPTConfig) -> dict:
    """The parameter tree of ``GPTModel(cfg)`` as ShapeDtypeStructs, without allocating it."""
    dummy = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    return jax.eval_shape(lambda ids: GPTModel(cfg).init(jax.random.PRNGKey(0), ids), dummy)[
        "params"
    ]
