"""Every mapping between the names GPT-2's weights go by, in one place.

The same weight has four names here:

=========================  ==============================  ===========================
naming                     the first block's QKV kernel    the final LayerNorm's scale
=========================  ==============================  ===========================
OpenAI's TF variables      ``model/h0/attn/c_attn/w``      ``model/ln_f/g``
the lab's ``params``       ``blocks[0]["attn"]["c_attn"]   ``params["g"]``
                           ["w"]``
the Flax tree              ``h0/attn/c_attn/kernel``       ``ln_f/scale``
Hugging Face (``GPT2Model``)  ``h.0.attn.c_attn.weight``   ``ln_f.weight``
=========================  ==============================  ===========================

No mapping changes a value or a layout: TF's conv kernels lose their leading axis of
1 when read (``openai.load_gpt2``), and after that every naming holds the same
``[in, out]`` arrays. The TF names appear here without ``model/`` ("flat names").

* flat names ↔ the lab's ``params``: ``nest_variables`` / ``flat_variables``;
* the lab's ``params`` ↔ the Flax tree: ``load_weights`` / ``lab_params``
  (``LAB_TO_FLAX``: ``w``, ``g``, ``b`` -> ``kernel``, ``scale``, ``bias``);
* flat names -> Hugging Face: ``hf_name``, and ``hf_tensors`` for a whole ``params``;
* the sizes: ``HF_TO_OPENAI`` (``config.json`` keys -> ``hparams.json`` keys);
  ``hparams.json`` -> ``GPTConfig`` is ``model.config.OPENAI_TO_CONFIG`` (a layer
  below, as the model needs it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

# Shapes of every per-block variable after the squeeze of TF's conv kernels,
# as functions of E = n_embd.
BLOCK_SHAPES: dict[str, Any] = {
    "ln_1/g": lambda e: (e,),
    "ln_1/b": lambda e: (e,),
    "attn/c_attn/w": lambda e: (e, 3 * e),
    "attn/c_attn/b": lambda e: (3 * e,),
    "attn/c_proj/w": lambda e: (e, e),
    "attn/c_proj/b": lambda e: (e,),
    "ln_2/g": lambda e: (e,),
    "ln_2/b": lambda e: (e,),
    "mlp/c_fc/w": lambda e: (e, 4 * e),
    "mlp/c_fc/b": lambda e: (4 * e,),
    "mlp/c_proj/w": lambda e: (4 * e, e),
    "mlp/c_proj/b": lambda e: (e,),
}

# The lab's leaf names -> the Flax tree's (inside blocks and ln_f; wte/wpe hold
# ``embedding``).
LAB_TO_FLAX = {"w": "kernel", "g": "scale", "b": "bias"}
FLAX_TO_LAB = {flax: lab for lab, flax in LAB_TO_FLAX.items()}

# config.json key -> OpenAI's hparams key (the lab's ``settings``).
HF_TO_OPENAI = {
    "vocab_size": "n_vocab",
    "n_positions": "n_ctx",
    "n_embd": "n_embd",
    "n_head": "n_head",
    "n_layer": "n_layer",
}

# What GPT2LMHeadModel and GPT2ForSequenceClassification put before GPT2Model's names.
HF_PREFIX = "transformer."
HF_SCORE = "score.weight"  # GPT2ForSequenceClassification's head: [C, E], no bias

# Tensors a Hugging Face folder may hold that are not weights: the causal-mask
# buffers of older transformers versions, and the LM head when it is saved although
# tied to wte.
BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")
LM_HEAD = "lm_head.weight"
IGNORED = (HF_SCORE,)  # a GPT2ForSequenceClassification's head, given as a backbone


def expected_shapes(settings: dict) -> dict[str, tuple[int, ...]]:
    """TF variable name (without ``model/``) -> shape after squeezing conv kernels."""
    e, v, t = settings["n_embd"], settings["n_vocab"], settings["n_ctx"]
    shapes = {"wte": (v, e), "wpe": (t, e), "ln_f/g": (e,), "ln_f/b": (e,)}
    for i in range(settings["n_layer"]):
        for name, shape in BLOCK_SHAPES.items():
            shapes[f"h{i}/{name}"] = shape(e)
    return shapes


def _block_index(scope: str) -> int | None:
    """``"h11"`` -> 11; any other scope -> None."""
    return int(scope[1:]) if scope.startswith("h") and scope[1:].isdigit() else None


# ------------------------------------------------------- flat names <-> lab params


def nest_variables(flat: dict[str, Any], n_layer: int) -> dict:
    """``{"h0/attn/c_attn/w": a, "ln_f/g": g, "wte": w, ...}`` -> the lab's nested dict:
    ``blocks[0]["attn"]["c_attn"]["w"]``, with ``ln_f``'s ``g``/``b`` at the top level."""
    params: dict[str, Any] = {"blocks": [{} for _ in range(n_layer)]}
    for name, array in flat.items():
        parts = name.split("/")
        index = _block_index(parts[0])
        if index is not None:
            target, parts = params["blocks"][index], parts[1:]
        else:
            target, parts = params, parts[1:] if parts[0] == "ln_f" else parts
        for key in parts[:-1]:
            target = target.setdefault(key, {})
        target[parts[-1]] = array
    return params


def flat_variables(params: dict) -> dict[str, np.ndarray]:
    """The lab's nested ``params`` -> ``{OpenAI flat name: array}`` (``nest_variables``
    undone)."""
    flat = {
        "wte": params["wte"],
        "wpe": params["wpe"],
        "ln_f/g": params["g"],
        "ln_f/b": params["b"],
    }

    def walk(prefix: str, tree) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(f"{prefix}/{key}", value)
            else:
                flat[f"{prefix}/{key}"] = value

    for i, block in enumerate(params["blocks"]):
        walk(f"h{i}", block)
    return flat


# --------------------------------------------------------- lab params <-> Flax tree


def _renamed(tree: Mapping, names: dict[str, str], leaf=lambda a: a) -> dict:
    """``tree`` with every leaf's key renamed by ``names`` (and its value by ``leaf``);
    the scopes above the leaves keep their names."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out[key] = _renamed(value, names, leaf)
        else:
            out[names.get(key, key)] = leaf(value)
    return out


def load_weights(params: dict) -> dict:
    """The lab's ``params`` dict -> the parameter tree of ``GPTModel`` (LM head tied).

    The whole mapping: ``g`` -> ``scale``, ``w`` -> ``kernel``, ``b`` -> ``bias``
    (``LAB_TO_FLAX``), ``wte``/``wpe`` -> ``embedding``; ``ln_f`` is spelled out because
    the lab keeps its ``g``/``b`` at the top level.
    """
    tree = {
        "wte": {"embedding": params["wte"]},
        "wpe": {"embedding": params["wpe"]},
        "ln_f": {"scale": params["g"], "bias": params["b"]},
    }
    for i, block in enumerate(params["blocks"]):
        tree[f"h{i}"] = _renamed(block, LAB_TO_FLAX)
    return tree


def lab_params(tree: dict) -> dict:
    """``load_weights`` undone: the Flax tree of ``GPTModel`` -> the lab's ``params``
    dict of NumPy arrays. A class head, if any, is left out (it is not GPT-2's)."""
    n_layer = sum(1 for k in tree if _block_index(k) is not None)
    params: dict[str, Any] = {
        "blocks": [],
        "g": np.asarray(tree["ln_f"]["scale"]),
        "b": np.asarray(tree["ln_f"]["bias"]),
        "wpe": np.asarray(tree["wpe"]["embedding"]),
        "wte": np.asarray(tree["wte"]["embedding"]),
    }
    for i in range(n_layer):
        block = tree[f"h{i}"]
        if any("lora_a" in layer for scope in ("attn", "mlp") for layer in block[scope].values()):
            raise ValueError(f"h{i} has LoRA adapters; fold them in first (model.merge_lora)")
        params["blocks"].append(_renamed(block, FLAX_TO_LAB, np.asarray))
    return params


# ------------------------------------------------------------ flat names -> Hugging Face


def hf_name(name: str) -> str:
    """OpenAI's flat variable name -> Hugging Face's tensor name (no ``transformer.``):
    ``h3/mlp/c_fc/w`` -> ``h.3.mlp.c_fc.weight``, ``ln_f/g`` -> ``ln_f.weight``,
    ``wte`` -> ``wte.weight``."""
    parts = name.split("/")
    if _block_index(parts[0]) is not None:
        parts = ["h", parts[0][1:], *parts[1:]]
    last = {"w": "weight", "g": "weight", "b": "bias"}.get(parts[-1])
    if last is None:  # wte, wpe
        return f"{name}.weight"
    return ".".join(parts[:-1] + [last])


def hf_tensors(params: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """The lab's ``params`` as Hugging Face's tensors ``{prefix + name: float32 array}``."""
    return {
        prefix + hf_name(name): np.ascontiguousarray(np.asarray(array, np.float32))
        for name, array in flat_variables(params).items()
    }


def is_hf_buffer(name: str) -> bool:
    """True for a causal-mask buffer (``h.0.attn.bias``, with or without
    ``transformer.``): stored by older transformers versions, not a weight."""
    return BUFFER.fullmatch(name.removeprefix(HF_PREFIX)) is not None


def hf_sizes(settings: dict) -> dict[str, int]:
    """The lab's ``settings`` as ``config.json``'s size keys (``HF_TO_OPENAI``)."""
    return {theirs: int(settings[ours]) for theirs, ours in HF_TO_OPENAI.items()}
