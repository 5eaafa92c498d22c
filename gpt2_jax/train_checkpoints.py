"""Training state at the end of each epoch, on disk, so an interrupted run can go on.

One orbax checkpoint per finished epoch under ``<run>/checkpoints/<epoch>/``:
``state`` (the ``TrainState``: step, trainable parameters, optimizer state) and ``meta``
(JSON: epoch, global step, the metrics history so far, and fingerprints of the
training data and of the frozen parameters). Frozen parameters never change, so they
are not saved again: a resumed run loads them from the model files, as at the start,
and the fingerprint proves they are the same (for 124M a checkpoint is 80 MB instead
of the 555 MB that all weights plus the Adam state would take).
Orbax writes each into a temporary folder and renames it when complete, so a
kill during a save leaves the previous epoch's checkpoint as the latest; only the
last ``keep`` are kept.

Randomness needs no saved generator: the batch order of epoch ``e`` is drawn
from ``(seed, e)`` and dropout keys from ``(seed, step)``, so ``seed``, ``epoch``
and ``step`` are the whole random state.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .tree import named_leaves

CHECKPOINTS_DIR = "checkpoints"


@dataclass
class Restored:
    state: Any  # TrainState
    meta: dict


def data_fingerprint(ids: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the training inputs, so a resume on other data is refused."""
    digest = hashlib.sha256()
    for array in (ids, labels):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def sampled_fingerprint(leaves: dict[str, Any], samples: int = 4096) -> str:
    """SHA-256 over each leaf's name, shape, dtype and ``samples`` evenly strided
    values: tells other weights apart (another checkpoint, another seed) without
    reading gigabytes."""
    digest = hashlib.sha256()
    for name in sorted(leaves):
        leaf = leaves[name]
        flat = leaf.reshape(-1)  # sampled where it lives: only the samples reach the host
        stride = max(1, flat.size // samples)
        digest.update(f"{name}{np.dtype(leaf.dtype)}{tuple(leaf.shape)}".encode())
        digest.update(np.ascontiguousarray(np.asarray(flat[::stride])).tobytes())
    return digest.hexdigest()


def run_fingerprints(frozen, train_ids, train_labels) -> dict:
    """What a checkpoint must match to be resumed: the training data and the frozen
    weights (which are not saved in it)."""
    return {"data_fingerprint": data_fingerprint(train_ids, train_labels),
            "frozen_fingerprint": sampled_fingerprint(named_leaves(frozen))}


class EpochCheckpoints:
    """Save / find / restore the training state of finished epochs in ``directory``."""

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        import orbax.checkpoint as ocp

        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.directory = Path(directory).resolve()
        self._ocp = ocp
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=False))

    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

    def save(self, epoch: int, state, meta: dict) -> None:
        """``state``: the ``TrainState`` (step, trainable leaves, optimizer state)."""
        ocp = self._ocp
        self._manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state._asdict()), meta=ocp.args.JsonSave(meta)))
        self._manager.wait_until_finished()

    def restore(self, epoch: int, state_like) -> Restored:
        """``state_like``: a ``TrainState`` (or its ``eval_shape``) giving the structure,
        shapes and dtypes to restore into."""
        ocp = self._ocp
        abstract = jax.eval_shape(lambda: state_like._asdict())
        try:
            out = self._manager.restore(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError, FileNotFoundError) as err:
            raise ValueError(f"cannot restore epoch {epoch} from {self.directory / str(epoch)}: "
                             f"{err}") from err
        return Restored(type(state_like)(**out.state), dict(out.meta))

    def resume(self, state_like, fingerprints: dict) -> Restored | None:
        """The latest epoch's state and meta; None when nothing is saved. Refuses a
        checkpoint whose ``fingerprints`` (data, frozen weights) differ from this run's."""
        last = self.latest_epoch()
        if last is None:
            return None
        restored = self.restore(last, state_like)
        for key, what in (("data_fingerprint", "training data (token ids or labels)"),
                          ("frozen_fingerprint", "frozen weights (model files or seed)")):
            if restored.meta.get(key) != fingerprints[key]:
                raise ValueError(f"{self.directory / str(last)}: saved for other {what} than "
                                 "this run has; resume with what the run started with")
        return restored

    def close(self) -> None:
        self._manager.close()
