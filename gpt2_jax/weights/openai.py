"""OpenAI's TensorFlow checkpoint -> the lab's ``params`` dict -> the Flax parameter tree.

Two pure steps:

* ``load_gpt2(model_dir)`` reads ``hparams.json`` and ``model.ckpt`` into
  ``(settings, params)``; ``params`` has keys ``blocks`` (one nested dict per
  transformer block), ``b`` and ``g`` (final LayerNorm), ``wpe`` and ``wte``, all
  NumPy arrays; every shape is checked against ``settings``.
* ``load_weights(params)`` renames that dict into the tree ``GPTModel`` uses.

TensorFlow is imported only when a checkpoint is read (``_tensorflow``) and kept off
any GPU; a missing TensorFlow is one ``CheckpointError`` saying how to convert instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from gpt2_jax.model.config import OPENAI_TO_CONFIG
from gpt2_jax.util.runtime import native_stderr_filtered

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


class CheckpointError(ValueError):
    """A checkpoint that does not match what its hparams promise."""


def expected_shapes(settings: dict) -> dict[str, tuple[int, ...]]:
    """TF variable name (without ``model/``) -> shape after squeezing conv kernels."""
    e, v, t = settings["n_embd"], settings["n_vocab"], settings["n_ctx"]
    shapes = {"wte": (v, e), "wpe": (t, e), "ln_f/g": (e,), "ln_f/b": (e,)}
    for i in range(settings["n_layer"]):
        for name, shape in BLOCK_SHAPES.items():
            shapes[f"h{i}/{name}"] = shape(e)
    return shapes


def parameter_count(settings: dict) -> int:
    """How many numbers the checkpoint of ``settings`` holds (all float32, 4 bytes each)."""
    return sum(int(np.prod(s)) for s in expected_shapes(settings).values())


def read_settings(model_dir: str | os.PathLike) -> dict:
    path = Path(model_dir) / "hparams.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a GPT-2 model directory holds hparams.json")
    try:
        settings = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    missing = [k for k in OPENAI_TO_CONFIG if k not in settings]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    return settings


def _read_tf_variables(ckpt_prefix: str) -> dict[str, np.ndarray]:
    """All variables of a TF checkpoint as ``{name: array}``."""
    tf = _tensorflow()
    try:  # a reader must not take GPU memory from JAX
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):
        pass  # already initialised; nothing to hide then
    reader = tf.train.load_checkpoint(ckpt_prefix)
    names = reader.get_variable_to_shape_map()
    return {name: np.asarray(reader.get_tensor(name)) for name in sorted(names)}


def _tensorflow():
    """TensorFlow, imported only here: a user of Hugging Face folders never needs it."""
    try:
        with native_stderr_filtered():  # its start-up lines, where the log level asks
            import tensorflow as tf
    except ImportError:
        raise CheckpointError(
            "reading OpenAI's TensorFlow checkpoint needs tensorflow (pip install "
            "tensorflow-cpu); or convert it once where TensorFlow is installed: python -m "
            "experiments.export --model-dir DIR --to hf OUT, then use --model-dir OUT"
        ) from None
    return tf


def checkpoint_prefix(model_dir: str | os.PathLike) -> str:
    """``model_dir/model.ckpt`` or whatever the ``checkpoint`` file names."""
    model_dir = Path(model_dir)
    state = model_dir / "checkpoint"
    if state.is_file():
        for line in state.read_text().splitlines():
            if line.startswith("model_checkpoint_path:"):
                name = line.split(":", 1)[1].strip().strip('"')
                return str(model_dir / Path(name).name)
    return str(model_dir / "model.ckpt")


def load_gpt2(model_dir: str | os.PathLike) -> tuple[dict, dict]:
    """Read an OpenAI GPT-2 directory into ``(settings, params)``.

    ``params["blocks"][i]["attn"]["c_attn"]["w"]`` has shape [E, 3E]: TF stores it as
    [1, E, 3E] (a width-1 convolution) and the leading axis is dropped.
    """
    model_dir = Path(model_dir)
    settings = read_settings(model_dir)
    prefix = checkpoint_prefix(model_dir)
    for suffix in (".index", ".data-00000-of-00001"):
        if not Path(prefix + suffix).is_file():
            raise FileNotFoundError(f"{prefix + suffix} not found (checkpoint of {model_dir})")
    try:
        variables = _read_tf_variables(prefix)
    except CheckpointError:
        raise
    except Exception as err:  # TF raises several types for damaged files
        data_file = Path(prefix + ".data-00000-of-00001")
        need = 4 * parameter_count(settings)
        if data_file.stat().st_size < need:  # every variable is float32, stored end to end
            raise CheckpointError(
                f"{data_file}: {data_file.stat().st_size:,} bytes, but the variables of "
                f"hparams.json {settings} take {need:,}: a truncated download? Delete it and "
                "download again"
            ) from err
        raise CheckpointError(f"cannot read TF checkpoint {prefix}: {err}") from err

    expected = expected_shapes(settings)
    found: dict[str, np.ndarray] = {}
    for full_name, array in variables.items():
        name = full_name.removeprefix("model/")
        if name not in expected:
            raise CheckpointError(
                f"{prefix}: unexpected variable {full_name!r} of shape {array.shape} "
                f"for settings {settings}"
            )
        if name.endswith("/w") and array.ndim == 3 and array.shape[0] == 1:
            array = array[0]  # TF conv1d kernel [1, in, out] -> [in, out]
        if array.shape != expected[name]:
            raise CheckpointError(
                f"{prefix}: variable {full_name!r} has shape {array.shape}, expected "
                f"{expected[name]} from hparams.json {settings}"
            )
        found[name] = array
    missing = sorted(set(expected) - set(found))
    if missing:
        raise CheckpointError(
            f"{prefix}: {len(missing)} variable(s) missing, e.g. "
            + ", ".join(f"model/{n} {expected[n]}" for n in missing[:5])
        )
    return settings, nest_variables(found, settings["n_layer"])


def nest_variables(flat: dict[str, Any], n_layer: int) -> dict:
    """``{"h0/attn/c_attn/w": a, "ln_f/g": g, "wte": w, ...}`` -> the lab's nested dict:
    ``blocks[0]["attn"]["c_attn"]["w"]``, with ``ln_f``'s ``g``/``b`` at the top level."""
    params: dict[str, Any] = {"blocks": [{} for _ in range(n_layer)]}
    for name, array in flat.items():
        parts = name.split("/")
        if parts[0].startswith("h") and parts[0][1:].isdigit():
            target, parts = params["blocks"][int(parts[0][1:])], parts[1:]
        else:
            target, parts = params, parts[1:] if parts[0] == "ln_f" else parts
        for key in parts[:-1]:
            target = target.setdefault(key, {})
        target[parts[-1]] = array
    return params


def load_weights(params: dict) -> dict:
    """The lab's ``params`` dict -> the parameter tree of ``GPTModel`` (LM head tied).

    The whole mapping: ``g`` -> ``scale``, ``w`` -> ``kernel``, ``b`` -> ``bias``,
    ``wte``/``wpe`` -> ``embedding``; ``ln_f`` is spelled out because the lab keeps
    its ``g``/``b`` at the top level.
    """

    def dense(p):
        return {"kernel": p["w"], "bias": p["b"]}

    def norm(p):
        return {"scale": p["g"], "bias": p["b"]}

    tree = {
        "wte": {"embedding": params["wte"]},
        "wpe": {"embedding": params["wpe"]},
        "ln_f": norm(params),
    }
    for i, block in enumerate(params["blocks"]):
        tree[f"h{i}"] = {
            "ln_1": norm(block["ln_1"]),
            "attn": {
                "c_attn": dense(block["attn"]["c_attn"]),
                "c_proj": dense(block["attn"]["c_proj"]),
            },
            "ln_2": norm(block["ln_2"]),
            "mlp": {"c_fc": dense(block["mlp"]["c_fc"]), "c_proj": dense(block["mlp"]["c_proj"])},
        }
    return tree


def lab_params(tree: dict) -> dict:
    """``load_weights`` undone: the Flax tree of ``GPTModel`` -> the lab's ``params``
    dict of NumPy arrays. A class head, if any, is left out (it is not GPT-2's)."""

    def dense(p):
        return {"w": np.asarray(p["kernel"]), "b": np.asarray(p["bias"])}

    def norm(p):
        return {"g": np.asarray(p["scale"]), "b": np.asarray(p["bias"])}

    n_layer = sum(1 for k in tree if k.startswith("h") and k[1:].isdigit())
    params = {
        "blocks": [],
        **norm(tree["ln_f"]),
        "wpe": np.asarray(tree["wpe"]["embedding"]),
        "wte": np.asarray(tree["wte"]["embedding"]),
    }
    for i in range(n_layer):
        block = tree[f"h{i}"]
        if any("lora_a" in layer for scope in ("attn", "mlp") for layer in block[scope].values()):
            raise ValueError(f"h{i} has LoRA adapters; fold them in first (model.merge_lora)")
        params["blocks"].append(
            {
                "ln_1": norm(block["ln_1"]),
                "attn": {
                    "c_attn": dense(block["attn"]["c_attn"]),
                    "c_proj": dense(block["attn"]["c_proj"]),
                },
                "ln_2": norm(block["ln_2"]),
                "mlp": {
                    "c_fc": dense(block["mlp"]["c_fc"]),
                    "c_proj": dense(block["mlp"]["c_proj"]),
                },
            }
        )
    return params
