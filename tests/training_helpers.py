"""What several training tests share: a tiny model, token-id data it can learn, the
partition that trains its last block, and a run with epoch checkpoints closed whatever
happens."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import numpy as np

from gpt2_jax.data.encoding import encode
from gpt2_jax.finetune.job import TrainingJob, train_classifier
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.training.checkpoints import EpochCheckpoints
from gpt2_jax.training.partition import Partition, resolve_trainable


@contextlib.contextmanager
def collected(lines: list[str]):
    """Append what the ``gpt2_jax`` loggers say (INFO and up) to ``lines`` meanwhile."""
    logger = logging.getLogger("gpt2_jax")
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def train_with_checkpoints(
    job: TrainingJob, params, folder: Path, *, keep: int, resume: bool = False, lines=None
):
    """``train_classifier`` saving each epoch in ``folder`` (``resume``: from the last);
    ``lines``: a list that gets what it logs."""
    checkpoints = EpochCheckpoints(folder, keep=keep)
    try:
        with collected(lines if lines is not None else []):
            return train_classifier(job, params, checkpoints=checkpoints, resume=resume)
    finally:
        checkpoints.close()


CFG = GPTConfig(
    vocab_size=50257, context_length=32, emb_dim=16, n_heads=2, n_layers=2, num_classes=2
)


def tiny_data(seed, n, length=24):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    lengths = rng.integers(2, length + 1, n)
    tokens = [
        [7 if y else 9] + rng.integers(0, 499, m - 1).tolist() for m, y in zip(lengths, labels)
    ]
    return encode(tokens, labels, length)


def tiny_partition(params):
    return Partition.from_patterns(params, resolve_trainable(["last_block"], CFG.n_layers))


def largest_data_file(epoch_dir):
    files = [
        p for p in (epoch_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"
    ]  # the array data orbax (OCDBT) writes
    assert files, f"no array data files under {epoch_dir / 'state'}"
    return max(files, key=lambda p: p.stat().st_size)


def damage_checkpoint(epoch_dir, how="flip"):
    """Damage a saved epoch: flip bytes in, truncate or delete its largest array file, or
    make its metadata disagree (``meta``)."""
    path = largest_data_file(epoch_dir)
    data = bytearray(path.read_bytes())
    if how == "flip":
        middle = len(data) // 2
        for i in range(middle, middle + 4):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "delete":
        path.unlink()
    elif how == "meta":
        meta_file = epoch_dir / "meta" / "metadata"
        meta = json.loads(meta_file.read_text())
        meta["step"] += 1
        meta_file.write_text(json.dumps(meta))
    else:
        raise ValueError(how)
