"""Training state at the end of each epoch, on disk, so an interrupted run can go on.

One orbax checkpoint per finished epoch under ``<run>/checkpoints/<epoch>/``:
``state`` (the trainable parameters and the optimizer state, as arrays) and ``meta``
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

from .tree import named_leaves, overlay, subtree

CHECKPOINTS_DIR = "checkpoints"


@dataclass
class Restored:
    params: Any
    opt_state: Any
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


def run_fingerprints(params, trainable: set[str], train_ids, train_labels) -> dict:
    """What a checkpoint must match to be resumed: the training data and the frozen
    weights (which are not saved in it)."""
    return {"data_fingerprint": data_fingerprint(train_ids, train_labels),
            "frozen_fingerprint": sampled_fingerprint(
                {n: leaf for n, leaf in named_leaves(params).items() if n not in trainable})}


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

    def save(self, epoch: int, params, opt_state, meta: dict) -> None:
        ocp = self._ocp
        state = {"params": params, "opt_state": opt_state}
        self._manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        self._manager.wait_until_finished()

    def restore(self, epoch: int, params_like, opt_state_like) -> Restored:
        """``params_like`` / ``opt_state_like``: trees (or their ``eval_shape``) giving
        the structure, shapes and dtypes to restore into."""
        ocp = self._ocp
        abstract = jax.eval_shape(lambda: {"params": params_like, "opt_state": opt_state_like})
        try:
            out = self._manager.restore(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError, FileNotFoundError) as err:
            raise ValueError(f"cannot restore epoch {epoch} from {self.directory / str(epoch)}: "
                             f"{err}") from err
        return Restored(out.state["params"], out.state["opt_state"], dict(out.meta))

    def resume(self, params, opt_state, trainable: set[str], fingerprints: dict
               ) -> tuple[Any, Any, dict] | None:
        """The latest epoch's ``(params, opt_state, meta)``: the saved trainable leaves
        laid over ``params`` (the frozen ones, read afresh). None when nothing is saved.
        Refuses a checkpoint whose ``fingerprints`` (data, frozen weights) differ."""
        last = self.latest_epoch()
        if last is None:
            return None
        restored = self.restore(last, subtree(params, trainable.__contains__), opt_state)
        for key, what in (("data_fingerprint", "training data (token ids or labels)"),
                          ("frozen_fingerprint", "frozen weights (model files or seed)")):
            if restored.meta.get(key) != fingerprints[key]:
                raise ValueError(f"{self.directory / str(last)}: saved for other {what} than "
                                 "this run has; resume with what the run started with")
        return overlay(params, restored.params), restored.opt_state, restored.meta

    def save_epoch(self, epoch: int, params, opt_state, trainable: set[str], meta: dict) -> None:
        """Save the trainable leaves of ``params`` and ``opt_state`` for ``epoch``."""
        self.save(epoch, subtree(params, trainable.__contains__), opt_state, meta)

    def close(self) -> None:
        self._manager.close()
