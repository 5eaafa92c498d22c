"""GPT-2 with its LM head replaced by a class head: build, save, load, predict."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .config import GPTConfig
from .data import encode, token_lists
from .model import GPTModel, init_params, param_shapes
from .pooling import pool_positions
from .tree import named_leaves, path_name

META_FILE = "classifier.json"
PARAMS_DIR = "classifier"


def with_class_head(pretrained, cfg: GPTConfig, seed: int) -> tuple[dict, list[str]]:
    """Parameters for ``GPTModel(cfg)`` (``cfg.num_classes`` set): every leaf that
    ``pretrained`` has is taken from it, the others (the class head) are initialised
    from ``seed``. Returns ``(params, names initialised)``.

    Only the missing leaves are initialised: the init runs under ``jit`` and returns
    just those, so XLA drops the rest and no second copy of the backbone is made."""
    if pretrained is None:
        fresh = init_params(cfg, seed)
        return fresh, list(named_leaves(fresh))
    have = named_leaves(pretrained)
    shapes = param_shapes(cfg)
    want = named_leaves(shapes)
    wrong = [f"{n}: checkpoint {have[n].shape} vs model {want[n].shape}"
             for n in want if n in have and tuple(have[n].shape) != want[n].shape]
    extra = [n for n in have if n not in want]
    if wrong or extra:
        raise ValueError("pretrained weights do not fit the classifier: "
                         + "; ".join(wrong + [f"{n}: not in the model" for n in extra]))
    missing = [n for n in want if n not in have]
    fresh = jax.jit(lambda: {n: leaf for n, leaf in named_leaves(init_params(cfg, seed)).items()
                             if n in missing})()
    merged = jax.tree_util.tree_map_with_path(
        lambda path, _: fresh[path_name(path)] if path_name(path) in fresh
        else jnp.asarray(have[path_name(path)]), shapes)
    return merged, missing


def save_classifier(run_dir: str | os.PathLike, params, cfg: GPTConfig, *, max_length: int,
                    pool: str, bpe_dir: str | os.PathLike | None = None) -> Path:
    """Write ``run_dir/classifier/`` (orbax) and ``run_dir/classifier.json``; copy the
    BPE files beside them so the run folder is self-contained."""
    import orbax.checkpoint as ocp

    run_dir = Path(run_dir).resolve()
    target = run_dir / PARAMS_DIR
    if target.exists():
        shutil.rmtree(target)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(target, params)
    checkpointer.wait_until_finished()
    meta = {"config": dataclasses.asdict(cfg), "max_length": max_length, "pool": pool,
            "labels": ["ham", "spam"]}
    if bpe_dir is not None:
        for name in ("encoder.json", "vocab.bpe"):
            if (Path(bpe_dir) / name).is_file():
                shutil.copyfile(Path(bpe_dir) / name, run_dir / name)
    (run_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    return target


def load_classifier(run_dir: str | os.PathLike) -> tuple[GPTModel, dict, dict]:
    """``(model, params, meta)`` of a classifier saved by ``save_classifier``."""
    import orbax.checkpoint as ocp

    run_dir = Path(run_dir).resolve()
    meta_path = run_dir / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: is {run_dir} a finished training run?")
    meta = json.loads(meta_path.read_text())
    cfg = GPTConfig(**meta["config"])
    model = GPTModel(cfg)
    abstract = jax.eval_shape(lambda: init_params(cfg))
    params = ocp.StandardCheckpointer().restore(run_dir / PARAMS_DIR, abstract)
    return model, params, meta


def predict_proba(model: GPTModel, params, tokenizer, texts: list[str], max_length: int,
                  pool: str, batch_size: int = 16) -> np.ndarray:
    """Class probabilities [N, C] for raw texts (encoded and padded as in training)."""
    length = min(max_length, model.cfg.context_length)
    data = encode(token_lists(tokenizer, texts), np.zeros(len(texts)), length)

    @jax.jit
    def probs(ids, lengths):
        index = pool_positions(lengths, ids.shape[1], pool)  # only that position is computed
        logits = model.apply({"params": params}, ids, pool_index=index)
        return jax.nn.softmax(logits, axis=-1)

    out = []
    for start in range(0, len(texts), batch_size):
        idx = np.resize(np.arange(start, min(start + batch_size, len(texts))), batch_size)
        out.append(np.asarray(probs(data.ids[idx], data.lengths[idx]))[: len(texts) - start])
    return np.concatenate(out)[: len(texts)]
