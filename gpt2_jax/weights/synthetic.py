"""Write GPT-2 checkpoints in exactly OpenAI's layout, with random values.

OpenAI's weights cannot be downloaded everywhere (CI, offline machines); tests,
benchmarks and offline demos use these instead. The variable list is written out
here on its own, not derived from the reader in ``checkpoint.py``, so a test that
reads what this writes checks the reader against an independent statement of the
layout.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np


def openai_variables(settings: dict, seed: int = 0, scale: float = 0.02) -> dict[str, np.ndarray]:
    """``{"model/h0/attn/c_attn/w": array[1, E, 3E], ...}`` with random float32 values."""
    rng = np.random.default_rng(seed)
    e, v, t = settings["n_embd"], settings["n_vocab"], settings["n_ctx"]

    def rand(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)

    variables = {"model/wte": rand(v, e), "model/wpe": rand(t, e)}
    for i in range(settings["n_layer"]):
        h = f"model/h{i}"
        variables.update(
            {
                f"{h}/ln_1/g": 1.0 + rand(e) * 5,
                f"{h}/ln_1/b": rand(e),
                f"{h}/attn/c_attn/w": rand(1, e, 3 * e),
                f"{h}/attn/c_attn/b": rand(3 * e),
                f"{h}/attn/c_proj/w": rand(1, e, e),
                f"{h}/attn/c_proj/b": rand(e),
                f"{h}/ln_2/g": 1.0 + rand(e) * 5,
                f"{h}/ln_2/b": rand(e),
                f"{h}/mlp/c_fc/w": rand(1, e, 4 * e),
                f"{h}/mlp/c_fc/b": rand(4 * e),
                f"{h}/mlp/c_proj/w": rand(1, 4 * e, e),
                f"{h}/mlp/c_proj/b": rand(e),
            }
        )
    variables["model/ln_f/g"] = 1.0 + rand(e) * 5
    variables["model/ln_f/b"] = rand(e)
    return variables


def write_tf_checkpoint(model_dir: str | os.PathLike, variables: dict[str, np.ndarray]) -> None:
    """Save ``variables`` with ``tf.compat.v1.train.Saver`` as ``model_dir/model.ckpt``.

    Writes ``checkpoint``, ``model.ckpt.index``, ``model.ckpt.data-00000-of-00001`` and
    ``model.ckpt.meta``, the files OpenAI ships. Values are fed through placeholders so
    the meta graph stays small.
    """
    import tensorflow as tf

    tf1 = tf.compat.v1
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    with tf.Graph().as_default():
        feeds, named = {}, {}
        for i, (name, array) in enumerate(variables.items()):
            holder = tf1.placeholder(tf.as_dtype(array.dtype), array.shape, name=f"init{i}")
            named[name] = tf1.Variable(holder, name=f"var{i}")
            feeds[holder] = array
        saver = tf1.train.Saver(var_list=named)
        with tf1.Session(config=tf1.ConfigProto(device_count={"GPU": 0})) as sess:
            sess.run(tf1.global_variables_initializer(), feed_dict=feeds)
            saver.save(sess, str(model_dir / "model.ckpt"))


RANDOM_MARKER = "random_weights.json"  # a folder of random weights says so (runs warn)


def random_weights_seed(model_dir: str | os.PathLike) -> int | None:
    """The seed of the random weights ``write_openai_model_dir`` put in ``model_dir``;
    None when the folder has no such marker (OpenAI's or Hugging Face's weights)."""
    try:
        marker = json.loads((Path(model_dir) / RANDOM_MARKER).read_text())
    except (OSError, ValueError):
        return None
    seed = marker.get("seed") if isinstance(marker, dict) else None
    return seed if isinstance(seed, int) else -1


def write_openai_model_dir(
    model_dir: str | os.PathLike,
    settings: dict,
    *,
    seed: int = 0,
    bpe_dir: str | os.PathLike | None = None,
) -> Path:
    """A complete GPT-2 model folder: ``hparams.json``, the checkpoint, ``RANDOM_MARKER``
    and (when ``bpe_dir`` is given) copies of its ``encoder.json`` and ``vocab.bpe``."""
    model_dir = Path(model_dir)
    write_tf_checkpoint(model_dir, openai_variables(settings, seed))
    (model_dir / "hparams.json").write_text(json.dumps(settings, indent=2))
    (model_dir / RANDOM_MARKER).write_text(json.dumps({"random_weights": True, "seed": seed}))
    if bpe_dir is not None:
        for name in ("encoder.json", "vocab.bpe"):
            shutil.copyfile(Path(bpe_dir) / name, model_dir / name)
    return model_dir
