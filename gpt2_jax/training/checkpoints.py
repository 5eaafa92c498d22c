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

Integrity: the meta also records a SHA-256 digest of every array of the saved state
(its dtype, shape and bytes, keyed by leaf name) and one of the meta itself. A resume
checks what it reads back against them; an epoch that reads back other bytes, or that
orbax cannot read at all, is damaged: the resume falls back to the newest intact epoch
and deletes the damaged newer ones (so their epochs are trained and saved again).
Checkpoints saved before digests were recorded are restored unverified, with a warning.

Randomness needs no saved generator: the batch order of epoch ``e`` is drawn
from ``(seed, e)`` and dropout keys from ``(seed, step)``, so ``seed``, ``epoch``
and ``step`` are the whole random state.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from gpt2_jax.parallel.mesh import host_tree, to_host
from gpt2_jax.util.tree import named_leaves

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
LEAF_DIGESTS = "leaf_digests"  # meta key: {leaf name: sha256 of dtype, shape and bytes}
META_DIGEST = "meta_digest"  # meta key: sha256 of the rest of the meta (as JSON)


@dataclass
class Restored:
    state: Any  # TrainState
    meta: dict  # what the caller saved (the digests this module adds are taken out)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (epoch, why) damaged, deleted
    verified: bool = True  # False: saved before digests were recorded, restored unchecked


class DamagedCheckpoint(ValueError):
    """An epoch's checkpoint that cannot be read back, or reads back other bytes than
    were saved."""

    def __init__(self, epoch: int, folder: Path, reason: str):
        super().__init__(f"{folder} is damaged ({reason})")
        self.epoch, self.folder, self.reason = epoch, folder, reason


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
        digest.update(np.ascontiguousarray(to_host(flat[::stride])).tobytes())
    return digest.hexdigest()


def run_fingerprints(frozen, train_ids, train_labels) -> dict:
    """What a checkpoint must match to be resumed: the training data and the frozen
    weights (which are not saved in it)."""
    return {
        "data_fingerprint": data_fingerprint(train_ids, train_labels),
        "frozen_fingerprint": sampled_fingerprint(named_leaves(frozen)),
    }


def leaf_digest(leaf) -> str:
    """SHA-256 of one array's dtype, shape and every byte (on the host)."""
    array = np.ascontiguousarray(np.asarray(leaf))
    digest = hashlib.sha256(f"{array.dtype}{tuple(array.shape)}".encode())
    # numpy's stubs give ndarray __buffer__ only on Python >= 3.12, yet every ndarray
    # has the buffer protocol at runtime
    digest.update(array.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    return digest.hexdigest()


def state_digests(state) -> dict[str, str]:
    """``{leaf name: leaf_digest}`` for a ``TrainState`` (names as ``named_leaves``
    gives them: ``step``, ``trainable/h11/attn/c_attn/kernel``, ``opt_state/0/mu/...``)."""
    tree = host_tree(state._asdict())  # one transfer for the whole state
    named = named_leaves(tree)
    if len(named) != len(jax.tree.leaves(tree)):
        raise ValueError(
            "two leaves of the training state have the same name; cannot record a digest per leaf"
        )
    return {name: leaf_digest(leaf) for name, leaf in named.items()}


def _meta_digest(meta: dict) -> str:
    """SHA-256 of the meta without its own digest, as canonical JSON (NaN included)."""
    body = {key: value for key, value in meta.items() if key != META_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _error_reason(err: BaseException) -> str:
    """The innermost explicit cause of an orbax / TensorStore error, on one short line
    (the outer messages are long dumps of TensorStore specs)."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = " ".join(str(err).split())
    if type(err) not in (Exception, ValueError) or not text:
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return (text[:300] + "...") if len(text) > 300 else text


def _orbax_coroutines() -> list:
    marker = f"{os.sep}orbax{os.sep}"
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, types.CoroutineType) and marker in obj.cr_code.co_filename
    ]


def _from_abandoned_read(unraisable) -> bool:
    """An error Python can only print: an abandoned orbax read, collected (it turns the
    GeneratorExit into an Exception), or its TensorStore read finishing and calling
    back into orbax's closed event loop."""
    if isinstance(unraisable.object, types.CoroutineType):
        return f"{os.sep}orbax{os.sep}" in unraisable.object.cr_code.co_filename
    return (
        isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == "Event loop is closed"
    )


def _quiet_restore(restore: Callable[[], Any], settle_s: float = 10.0) -> tuple[Any, str | None]:
    """``(restore(), None)``, or ``(None, why it failed)`` for any error.

    When one array read fails, orbax closes its event loop while the reads it started
    alongside are still in flight; each then prints "Exception ignored ..." with a
    traceback, when its read finishes and when it is collected, at some later moment.
    So after a failure this waits (``settle_s`` at most) until those reads are gone,
    and drops what they print."""
    previous = sys.unraisablehook

    def hook(unraisable):
        if not _from_abandoned_read(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        try:
            return restore(), None
        except Exception as err:  # orbax raises bare Exception, ValueError, OSError, ...
            reason = _error_reason(err)
        deadline = time.monotonic() + settle_s  # the error and its traceback are dropped
        while True:
            gc.collect()
            if not _orbax_coroutines() or time.monotonic() > deadline:
                return None, reason
            time.sleep(0.01)
    finally:
        sys.unraisablehook = previous


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
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=False
            ),
        )

    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

    def folder(self, epoch: int) -> Path:
        return self.directory / str(epoch)

    def save(self, epoch: int, state, meta: dict) -> None:
        """``state``: the ``TrainState`` (step, trainable leaves, optimizer state).
        ``meta`` (JSON) is saved with a digest of every leaf of ``state`` and of itself."""
        ocp = self._ocp
        full = json.loads(json.dumps({**meta, LEAF_DIGESTS: state_digests(state)}))
        full[META_DIGEST] = _meta_digest(full)
        saved = self._manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state._asdict()), meta=ocp.args.JsonSave(full)
            ),
        )
        self._manager.wait_until_finished()
        if not saved:  # orbax skips (returns False) a step not after the latest saved one
            raise ValueError(
                f"epoch {epoch} was not saved: {self.directory} holds epoch "
                f"{self.latest_epoch()}, and orbax saves only later epochs"
            )

    def restore(self, epoch: int, state_like, fingerprints: dict | None = None) -> Restored:
        """``state_like``: a ``TrainState`` (or its ``eval_shape``) giving the structure,
        shapes and dtypes to restore into. Raises ``DamagedCheckpoint`` (a ``ValueError``)
        when the epoch cannot be read or differs from the digests recorded at save time,
        and a plain ``ValueError`` when it was saved for another run (``fingerprints``:
        data and frozen weights) or another layout of the training state."""
        meta = self._read_meta(epoch)
        if fingerprints is not None:
            for key, what in (
                ("data_fingerprint", "training data (token ids or labels)"),
                ("frozen_fingerprint", "frozen weights (model files or seed)"),
            ):
                if meta.get(key) != fingerprints[key]:
                    raise ValueError(
                        f"{self.folder(epoch)}: saved for other {what} than "
                        "this run has; resume with what the run started with"
                    )
        digests = meta.pop(LEAF_DIGESTS, None)
        meta.pop(META_DIGEST, None)
        if digests is not None:
            expected = set(named_leaves(jax.eval_shape(lambda: state_like._asdict())))
            if set(digests) != expected:  # the meta is intact (its digest matched): a refusal
                missing, extra = sorted(expected - set(digests)), sorted(set(digests) - expected)
                raise ValueError(
                    f"{self.folder(epoch)}: saved for another layout of the training state "
                    f"(trainable parameters or optimizer); not saved: {missing[:3]}, not in "
                    f"this run: {extra[:3]}; resume with the settings the run started with"
                )
        state = self._read_state(epoch, state_like)
        if digests is not None:
            for name, leaf in named_leaves(host_tree(state._asdict())).items():
                if leaf_digest(leaf) != digests[name]:
                    raise DamagedCheckpoint(
                        epoch,
                        self.folder(epoch),
                        f"{name} differs from the digest recorded when it was saved",
                    )
        return Restored(state, meta, verified=digests is not None)

    def _read_meta(self, epoch: int) -> dict:
        ocp = self._ocp
        out, reason = _quiet_restore(
            lambda: self._manager.restore(
                epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
        )
        if reason is not None:
            raise DamagedCheckpoint(epoch, self.folder(epoch), f"meta unreadable: {reason}")
        meta = out.meta
        if not isinstance(meta, dict):
            raise DamagedCheckpoint(epoch, self.folder(epoch), "meta is not a JSON object")
        meta = dict(meta)
        if META_DIGEST in meta and meta[META_DIGEST] != _meta_digest(meta):
            raise DamagedCheckpoint(
                epoch, self.folder(epoch), "meta differs from the digest recorded when it was saved"
            )
        if LEAF_DIGESTS in meta and META_DIGEST not in meta:
            raise DamagedCheckpoint(epoch, self.folder(epoch), "meta has lost its digest")
        return meta

    def _read_state(self, epoch: int, state_like):
        ocp = self._ocp
        abstract = jax.tree.map(  # restored where the live state lives (its mesh, if any)
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            state_like._asdict(),
        )
        out, reason = _quiet_restore(
            lambda: self._manager.restore(
                epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )
        )
        if reason is not None:
            raise DamagedCheckpoint(epoch, self.folder(epoch), f"state unreadable: {reason}")
        return type(state_like)(**out.state)

    def _delete(self, epoch: int) -> None:
        """Remove a damaged epoch, so that it is not found as the latest again and its
        epoch number can be saved anew (orbax skips a step not after the latest)."""
        folder = self.folder(epoch)
        try:
            self._manager.delete(epoch)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
        self._manager.reload()
        if folder.exists() or epoch in self._manager.all_steps():
            raise ValueError(
                f"{folder} is damaged and could not be deleted; delete it by hand and resume again"
            )

    def resume(self, state_like, fingerprints: dict) -> Restored | None:
        """The newest intact epoch's state and meta; None when nothing is saved.

        Epochs are tried newest first; a damaged one (unreadable, or other bytes than the
        digests recorded at save time) is skipped, and once an older one restores intact
        the damaged newer ones are deleted and said in the log (``Restored.skipped``).
        Raises ``ValueError`` when every epoch is damaged, and refuses (``ValueError``) a
        checkpoint whose ``fingerprints`` (data, frozen weights) differ from this run's."""
        self._manager.reload()
        damaged: list[DamagedCheckpoint] = []
        for epoch in sorted(self._manager.all_steps(), reverse=True):
            try:
                restored = self.restore(epoch, state_like, fingerprints)
            except DamagedCheckpoint as err:
                damaged.append(err)
                continue
            for bad in damaged:
                self._delete(bad.epoch)
                logger.info(
                    f"{bad}; resuming from epoch {epoch} instead (deleted {bad.folder}, so "
                    f"epoch {bad.epoch} is trained and saved again)"
                )
            if not restored.verified:
                logger.info(
                    f"warning: {self.folder(epoch)} was saved before checkpoints recorded "
                    "digests, so it is restored unverified"
                )
            restored.skipped = [(bad.epoch, str(bad)) for bad in damaged]
            return restored
        if damaged:
            raise ValueError(
                f"no intact checkpoint to resume from in {self.directory}: "
                + "; ".join(str(err) for err in damaged)
                + ". Start the run again without --resume, in a new run folder"
            )
        return None

    def close(self) -> None:
        self._manager.close()
