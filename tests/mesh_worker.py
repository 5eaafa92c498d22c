"""Run in a process of its own with several CPU devices (XLA_FLAGS set by the caller):
fine-tune the tiny model once per mesh and save what each run ended with.

    python tests/mesh_worker.py MODEL_DIR DATA_FILE OUT_DIR MESH:CACHE [MESH:CACHE ...]

MESH is a ``--mesh`` value, or ``none`` for the single-device path (``data=1``); CACHE is ``cache``
(the frozen prefix computed once) or ``plain``. For each, writes
``OUT_DIR/<mesh>-<cache>.npz`` (the trained leaves) and ``.json`` (history, the
sharding of every trained leaf).
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np

from gpt2_jax.classifier.classifier import with_class_head
from gpt2_jax.data.encoding import encode_splits
from gpt2_jax.data.tokenizer import get_tokenizer
from gpt2_jax.finetune.config import DataConfig, SpeedConfig
from gpt2_jax.finetune.inputs import read_data
from gpt2_jax.finetune.job import TrainingJob, TrainingPlan, train_classifier
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import GPTModel
from gpt2_jax.parallel import mesh as mesh_module
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.training.loss import class_weights
from gpt2_jax.training.partition import Partition, resolve_trainable
from gpt2_jax.util.tree import named_leaves
from gpt2_jax.weights.openai import load_gpt2, load_weights

mesh_module.MIN_SHARDED_ELEMENTS = 64  # the tiny model's trained leaves are small


def main(model_dir, data_file, out_dir, *meshes):
    out = Path(out_dir)
    data_cfg = DataConfig(data_file=data_file, train_size=48, val_size=16, test_size=16)
    labelled = read_data(data_cfg, seed=123)
    settings, pretrained = load_gpt2(model_dir)
    cfg = GPTConfig.from_settings(settings, num_classes=2)
    tokenizer = get_tokenizer(model_dir)
    encoded, _ = encode_splits(
        labelled.splits, tokenizer, cfg.context_length, None, vocab_size=cfg.vocab_size
    )
    tc = TrainConfig(epochs=2, batch_size=8, lr=1e-3)
    weights = class_weights(
        tc.class_weights, labelled.splits.train["y"].to_numpy(), labelled.classes
    )
    params, _ = with_class_head(load_weights(pretrained), cfg, tc.seed)
    params = jax.tree.map(np.asarray, params)  # on the host: each run puts (and donates) its own
    partition = Partition.from_patterns(params, resolve_trainable(tc.trainable, cfg.n_layers))
    for item in meshes:
        spec, cache = item.split(":")
        speed = SpeedConfig(
            prefix_cache=cache == "cache", mesh="data=1" if spec == "none" else spec
        )  # data=1: no mesh
        trained, history = train_classifier(
            TrainingJob(
                TrainingPlan(encoded, labelled.classes, tc, speed, "last-real", weights),
                GPTModel(cfg),
                partition,
            ),
            params,
        )
        leaves = named_leaves(partition.trainable(trained))
        name = f"{spec.replace(',', '+').replace('=', '')}-{cache}"
        np.savez(
            out / f"{name}.npz", **{k.replace("/", "."): np.asarray(v) for k, v in leaves.items()}
        )
        clean = [{k: v for k, v in e.items() if not k.endswith("seconds")} for e in history]
        (out / f"{name}.json").write_text(
            json.dumps(
                {
                    "history": clean,
                    "devices": jax.device_count(),
                    "shardings": {
                        k: str(getattr(v.sharding, "spec", "single")) for k, v in leaves.items()
                    },
                    "devices_used": {k: len(v.sharding.device_set) for k, v in leaves.items()},
                }
            )
        )
        print(name, "done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
