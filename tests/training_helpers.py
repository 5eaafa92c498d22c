"""What several training tests repeat: a run with epoch checkpoints, closed whatever happens."""

from __future__ import annotations

from pathlib import Path

from gpt2_jax.finetune.job import TrainingJob, train_classifier
from gpt2_jax.training.checkpoints import EpochCheckpoints


def train_with_checkpoints(
    job: TrainingJob, params, folder: Path, *, keep: int, resume: bool = False, log=None
):
    """``train_classifier`` saving each epoch in ``folder`` (``resume``: from the last)."""
    checkpoints = EpochCheckpoints(folder, keep=keep)
    try:
        return train_classifier(
            job,
            params,
            checkpoints=checkpoints,
            resume=resume,
            log=log if log is not None else (lambda s: None),
        )
    finally:
        checkpoints.close()
