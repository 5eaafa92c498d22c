"""OpenAI's TensorFlow checkpoint -> the lab's ``params`` dict -> the Flax parameter tree.

Two pure steps:

* ``load_gpt2(model_dir)`` reads ``hparams.json`` and ``model.ckpt`` into
  ``(settings, params)``; ``params`` has keys ``blocks`` (one nested dict per
  transformer block), ``b`` and ``g`` (final LayerNorm), ``wpe`` and ``wte``, all
  NumPy arrays; every shape is checked against ``settings``.
* ``load_weights(params)`` renames that dict into the tree ``GPTModel`` uses (it
  lives in ``weights.names`` with every other renaming, and is importable here).

TensorFlow is imported only when a checkpoint is read (``_tensorflow``) and kept off
any GPU; a missing TensorFlow is one ``CheckpointError`` saying how to convert instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from gpt2_jax.model.config import OPENAI_TO_CONFIG
from gpt2_jax.util.runtime import native_stderr_filtered

# the names, and the renames to the other namings, live in names; kept importable here
from gpt2_jax.weights.names import (  # noqa: F401
    BLOCK_SHAPES,
    expected_shapes,
    lab_params,
    load_weights,
    nest_variables,
)


class CheckpointError(ValueError):
    """A checkpoint that does not match what its hparams promise."""


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
