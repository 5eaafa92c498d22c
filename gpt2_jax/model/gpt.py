"""GPT-2 as ``flax.linen`` modules.

Submodules carry the names of OpenAI's TensorFlow scopes (``wte``, ``wpe``, ``h0`` …
``h{n-1}``, ``ln_1``, ``attn/c_attn``, ``attn/c_proj``, ``ln_2``, ``mlp/c_fc``,
``mlp/c_proj``, ``ln_f``), so a parameter path such as ``h11/attn/c_attn/kernel``
names the same weights as ``model/h11/attn/c_attn/w`` in the checkpoint (every such
renaming is in ``weights.names``). The attention arithmetic is in ``model.attention``;
this module holds the weights and the order of the layers.

Shapes: B = batch, T = sequence length, E = ``emb_dim``, H = ``n_heads``,
D = E / H, V = ``vocab_size``, C = ``num_classes``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt2_jax.model.attention import (
    causal_attention,
    dot,
    fused_attention,
    pooled_attention,
    uses_fused_attention,
)
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.util.tree import Params

LAYER_NORM_EPS = 1e-5  # GPT-2's value (flax's default is 1e-6)
_init = nn.initializers.normal(stddev=0.02)


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS, name=name)


def matmul_dtype(cfg: GPTConfig):
    return None if cfg.matmul_dtype in (None, "float32") else jnp.dtype(cfg.matmul_dtype)


def _take(x, index):
    """[B, T, E], [B] -> [B, 1, E]: the row of each sequence at ``index``."""
    return jnp.take_along_axis(x, index[:, None, None], axis=1)


def _lora_a_init(key, shape, dtype=jnp.float32):
    """Uniform in ±1/sqrt(rank): what PyTorch's kaiming_uniform_(a=sqrt(5)) gives the
    book's A [in, rank] (its fan-in is the rank)."""
    bound = 1.0 / math.sqrt(shape[1])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def effective_kernel(p: Mapping[str, Any], lora_alpha: float) -> jax.Array:
    """A ``Linear``'s kernel with its LoRA update added: W + (alpha / r) A B."""
    if "lora_a" not in p:
        return p["kernel"]
    rank = p["lora_a"].shape[1]
    return p["kernel"] + (lora_alpha / rank) * (p["lora_a"] @ p["lora_b"])


class Linear(nn.Module):
    """``x @ kernel + bias`` with ``nn.Dense``'s parameter names (kernel [in, out]).

    ``cols`` applies only a slice of the output columns, e.g. just the key/value part
    of ``c_attn``. ``lora_rank`` > 0 adds LoRA adapters ``lora_a`` [in, r] (random) and
    ``lora_b`` [r, out] (zeros, so a fresh adapter changes nothing):
    ``y = x W + b + (lora_alpha / r) (x A) B``.
    """

    features: int
    use_bias: bool = True
    dtype: Any = None  # matmul input dtype; None = float32
    lora_rank: int = 0
    lora_alpha: float = 16.0

    @nn.compact
    def __call__(self, x: jax.Array, cols: slice | None = None) -> jax.Array:
        kernel = self.param("kernel", _init, (x.shape[-1], self.features), jnp.float32)
        bias = (
            self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            if self.use_bias
            else None
        )
        lora = None
        if self.lora_rank:
            lora = (
                self.param("lora_a", _lora_a_init, (x.shape[-1], self.lora_rank)),
                self.param("lora_b", nn.initializers.zeros, (self.lora_rank, self.features)),
            )
        if cols is not None:
            kernel = kernel[:, cols]
            bias = None if bias is None else bias[cols]
            lora = None if lora is None else (lora[0], lora[1][:, cols])
        y = dot(x, kernel, self.dtype)
        if lora is not None:
            y = y + (self.lora_alpha / self.lora_rank) * dot(
                dot(x, lora[0], self.dtype), lora[1], self.dtype
            )
        return y if bias is None else y + bias


def normalise(x: jax.Array) -> jax.Array:
    """LayerNorm without its scale and bias: (x - mean) / sqrt(var + eps) over the last
    axis, the variance as flax computes it (E[x^2] - E[x]^2, clipped at 0)."""
    mean = x.mean(-1, keepdims=True)
    var = jnp.maximum(0.0, (x * x).mean(-1, keepdims=True) - mean * mean)
    return (x - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS)


class CausalSelfAttention(nn.Module):
    cfg: GPTConfig
    lora: bool = False  # LoRA adapters on c_attn and c_proj (cfg.lora_rank)

    @nn.compact
    def __call__(
        self,
        h: jax.Array,
        deterministic: bool = True,
        query_index: jax.Array | None = None,
        keys=None,
        segments: jax.Array | None = None,
    ) -> jax.Array:
        """[B, T, E] -> [B, T, E]; position t attends to positions <= t (of its own
        segment, when ``segments`` [B, T] says which text each position belongs to).

        Pooled form: ``h`` is ln_1's output at one position per sequence [B, 1, E],
        ``query_index`` [B] that position, ``keys = (n, scale, shift)`` the normalised
        rows [B, T, E] and ln_1's scale and shift, from which ``pooled_attention`` forms
        keys and values implicitly. Result [B, 1, E].
        """
        cfg, dtype = self.cfg, matmul_dtype(self.cfg)
        b, t, e = h.shape
        rank = cfg.lora_rank if self.lora else 0
        c_attn = Linear(
            3 * e,
            use_bias=cfg.qkv_bias,
            dtype=dtype,
            lora_rank=rank,
            lora_alpha=cfg.lora_alpha,
            name="c_attn",
        )
        c_proj = Linear(e, dtype=dtype, lora_rank=rank, lora_alpha=cfg.lora_alpha, name="c_proj")
        dropout = nn.Dropout(cfg.drop_rate)
        if query_index is not None:
            out = self._pooled(c_attn, h, query_index, keys, dropout, deterministic)
            return dropout(c_proj(out[:, None]), deterministic=deterministic)
        q, k, v = jnp.split(c_attn(h), 3, axis=-1)

        def heads(a):  # [b, t, emb] -> [b, t, heads, head_dim]
            return a.reshape(b, t, cfg.n_heads, cfg.head_dim)

        q, k, v = heads(q), heads(k), heads(v)
        if deterministic or cfg.drop_rate == 0:
            attend = fused_attention if uses_fused_attention(cfg) else causal_attention
            out = attend(q, k, v, dtype, segments=segments, causal=cfg.causal)
        else:
            out = _dropout_attention(q, k, v, dropout, dtype, segments, cfg.causal)
        return dropout(c_proj(out.reshape(b, t, e)), deterministic=deterministic)

    def _pooled(self, c_attn, h, query_index, keys, dropout, deterministic) -> jax.Array:
        """The pooled form's attention output [B, E]: the query from ``h``, keys and
        values formed implicitly by ``pooled_attention`` from c_attn's kernel columns."""
        cfg, dtype, e = self.cfg, matmul_dtype(self.cfg), h.shape[-1]
        n, scale, shift = keys
        q = c_attn(h[:, 0], cols=slice(0, e))
        kernel = effective_kernel(c_attn.variables["params"], cfg.lora_alpha)
        b_v = (
            c_attn.variables["params"]["bias"][2 * e :]
            if cfg.qkv_bias
            else jnp.zeros((e,), kernel.dtype)
        )
        drop = None if deterministic else (lambda w: dropout(w, deterministic=False))
        return pooled_attention(
            q, n, query_index, scale, shift, kernel[:, e : 2 * e], kernel[:, 2 * e :], b_v,
            cfg.n_heads, dtype, drop, cfg.causal,
        )  # fmt: skip


def _dropout_attention(q, k, v, dropout, dtype, segments, causal: bool) -> jax.Array:
    """Attention [B, T, H, D] with dropout on its weights (training with --drop-rate): the
    scores are formed explicitly, which the fused kernels do not allow."""
    t, head_dim = q.shape[1], q.shape[-1]
    keys = jnp.arange(t)
    scores = dot(q, k, dtype, "bqhd,bkhd->bhqk") / math.sqrt(head_dim)
    visible = ((keys[:, None] >= keys[None, :]) | (not causal))[None, None]
    if segments is not None:
        visible = visible & (segments[:, None, :, None] == segments[:, None, None, :])
    scores = jnp.where(visible, scores, jnp.finfo(scores.dtype).min)
    weights = dropout(jax.nn.softmax(scores, axis=-1), deterministic=False)
    return dot(weights, v, dtype, "bhqk,bkhd->bqhd")


class MLP(nn.Module):
    cfg: GPTConfig
    lora: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        """[B, T, E] -> [B, T, E] through a 4E hidden layer with tanh-approximated GELU."""
        e, dtype = self.cfg.emb_dim, matmul_dtype(self.cfg)
        lora: dict[str, Any] = dict(
            lora_rank=self.cfg.lora_rank if self.lora else 0, lora_alpha=self.cfg.lora_alpha
        )
        h = Linear(4 * e, dtype=dtype, name="c_fc", **lora)(x)
        h = jax.nn.gelu(h, approximate=True)
        h = Linear(e, dtype=dtype, name="c_proj", **lora)(h)
        return nn.Dropout(self.cfg.drop_rate)(h, deterministic=deterministic)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    With ``query_index`` [B] only that position is computed: [B, T, E] -> [B, 1, E].
    ``segments``: see ``CausalSelfAttention``. ``lora``: adapters on its four linear
    layers (``cfg.lora_rank``).
    """

    cfg: GPTConfig
    lora: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        deterministic: bool = True,
        query_index: jax.Array | None = None,
        segments: jax.Array | None = None,
    ) -> jax.Array:
        ln_1, attn = _layer_norm("ln_1"), CausalSelfAttention(self.cfg, self.lora, name="attn")
        if query_index is None:
            x = x + attn(ln_1(x), deterministic, segments=segments)
        else:  # keys and values from every row, formed implicitly (pooled_attention)
            row = _take(x, query_index)
            h = ln_1(row)
            norm = ln_1.variables["params"]
            x = row + attn(
                h, deterministic, query_index, keys=(normalise(x), norm["scale"], norm["bias"])
            )
        return x + MLP(self.cfg, self.lora, name="mlp")(_layer_norm("ln_2")(x), deterministic)


class GPTModel(nn.Module):
    """GPT-2: token ids [B, T] -> logits [B, T, V] (or [B, T, C] with a class head).

    Dropout is active only when ``deterministic=False``; then ``apply`` needs a
    ``"dropout"`` rng.

    The forward pass can be cut into pieces that share one parameter tree:

    * ``stop=k`` runs embeddings and blocks ``h0 .. h{k-1}`` and returns the hidden
      states [B, T, E] (the input of block k, or of ``ln_f`` when k = n_layers);
    * ``start=k`` takes such hidden states instead of token ids and runs the rest;
    * ``pool_index`` [B] computes only that position in the last block, the final
      norm and the head: logits [B, V] or [B, C]. Keys and values still use every
      position, so the result equals the full computation read at ``pool_index``;
    * ``positions`` and ``segments`` [B, T] (both or neither) run rows packed with
      several texts: each position's index within its own text, and which text it
      belongs to (attention stays inside a text).
    """

    cfg: GPTConfig

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool = True,
        *,
        start: int = 0,
        stop: int | None = None,
        pool_index: jax.Array | None = None,
        positions: jax.Array | None = None,
        segments: jax.Array | None = None,
    ) -> jax.Array:
        cfg = self.cfg
        last = _block_range(cfg, inputs.shape[1], start, stop)
        wte = nn.Embed(cfg.vocab_size, cfg.emb_dim, embedding_init=_init, name="wte")
        x = self._embed(wte, inputs, positions, deterministic) if start == 0 else inputs
        for i in range(start, last):
            pooled = pool_index is not None and i == cfg.n_layers - 1
            x = Block(cfg, cfg.has_lora(i), name=f"h{i}")(
                x, deterministic, pool_index if pooled else None, segments
            )
        if stop is not None:
            return x  # hidden states entering block `stop` (before ln_f even if stop = n)
        if pool_index is not None and start == cfg.n_layers:
            x = _take(x, pool_index)  # no block ran here: pick the position now
        logits = self._head(wte, _layer_norm("ln_f")(x))
        return logits if pool_index is None else logits[:, 0, :]

    def _embed(self, wte: nn.Embed, ids: jax.Array, positions, deterministic: bool) -> jax.Array:
        """Token plus position embeddings (then dropout): [B, T] -> [B, T, E]. Called
        from the compact ``__call__``, so its submodules join the same scope."""
        cfg = self.cfg
        wpe = nn.Embed(
            cfg.context_length,
            cfg.emb_dim,
            embedding_init=nn.initializers.normal(0.01),
            name="wpe",
        )
        x = wte(ids) + wpe(jnp.arange(ids.shape[1]) if positions is None else positions)
        return nn.Dropout(cfg.drop_rate)(x, deterministic=deterministic)

    def _head(self, wte: nn.Embed, x: jax.Array) -> jax.Array:
        """ln_f's output -> logits: the LM head tied to ``wte`` [.., V], or the class head
        [.., C] when ``cfg.num_classes`` is set."""
        if self.cfg.num_classes is None:
            return wte.attend(x)  # output head tied to the token embedding
        return nn.Dense(self.cfg.num_classes, kernel_init=_init, name="head")(x)


def _block_range(cfg: GPTConfig, t: int, start: int, stop: int | None) -> int:
    """The block after the last one to run (``stop``, or all), once ``start``/``stop``
    and the sequence length ``t`` are checked against ``cfg``."""
    last = cfg.n_layers if stop is None else stop
    if not 0 <= start <= last <= cfg.n_layers:
        raise ValueError(f"need 0 <= start {start} <= stop {last} <= n_layers {cfg.n_layers}")
    if t > cfg.context_length:
        raise ValueError(
            f"sequence length {t} exceeds the model's context_length {cfg.context_length}"
        )
    return last


def init_params(cfg: GPTConfig, seed: int = 0, seq_len: int = 8) -> Params:
    """Random parameters for ``GPTModel(cfg)`` (GPT-2's normal(0.02) init)."""
    dummy = jnp.zeros((1, min(seq_len, cfg.context_length)), jnp.int32)
    return GPTModel(cfg).init(jax.random.PRNGKey(seed), dummy)["params"]


def param_shapes(cfg: GPTConfig) -> Params:
    """The parameter tree of ``GPTModel(cfg)`` as ShapeDtypeStructs, without allocating it."""
    dummy = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    return jax.eval_shape(lambda ids: GPTModel(cfg).init(jax.random.PRNGKey(0), ids), dummy)[
        "params"
    ]


def merge_lora(params: Params, cfg: GPTConfig) -> tuple[Params, GPTConfig]:
    """The same model without adapters: every ``Linear`` with ``lora_a``/``lora_b`` gets
    ``W + (alpha / r) A B`` as its kernel, and the config ``lora_rank=0``. Predictions
    agree with the unmerged model up to float32 rounding."""

    def walk(node):
        if not isinstance(node, dict):
            return node
        if "lora_a" in node:
            rest = {k: v for k, v in node.items() if k not in ("lora_a", "lora_b")}
            return {**rest, "kernel": effective_kernel(node, cfg.lora_alpha)}
        return {k: walk(v) for k, v in node.items()}

    return walk(params), dataclasses.replace(cfg, lora_rank=0, lora_blocks=0)
