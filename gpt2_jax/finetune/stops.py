"""How a run stops: SIGTERM taken like Ctrl-C, and the record of where it stopped."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from gpt2_jax.finetune.config import RunConfig
from gpt2_jax.finetune.folder import run_name
from gpt2_jax.finetune.record import METRICS_FILE, RunRecord
from gpt2_jax.finetune.report import write_json
from gpt2_jax.training.checkpoints import (
    EpochCheckpoints,
)

logger = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run records where it stopped."""

    def __str__(self) -> str:
        return "terminated (SIGTERM)"


def sigterm_as_interrupt() -> Callable[[], None]:
    """Turn SIGTERM into ``Terminated`` while a run goes on (main thread only); returns
    the function that puts the previous handler back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def record_stop(
    report: RunRecord,
    run_dir: Path,
    checkpoints: EpochCheckpoints,
    cfg: RunConfig,
    err: BaseException,
) -> None:
    """``metrics.json`` says why the run stopped and where its last good state is; the
    error gets the same as a note. Best effort: the disk may be what failed."""
    kept = checkpoints.latest_epoch()
    entry = "spam" if run_name(cfg).startswith("spam-") else "finetune"
    where = (
        f"the last good state (epoch {kept}) is in {checkpoints.directory}; "
        f"`python -m experiments.{entry} --resume {run_dir}` goes on from there"
        if kept
        else "no epoch had finished, so no training state was saved"
    )
    reason = (str(err).splitlines() or [""])[0] or (
        "interrupted" if isinstance(err, KeyboardInterrupt) else type(err).__name__
    )
    report.status = f"stopped: {reason}; {where}"
    try:
        write_json(run_dir / METRICS_FILE, report.to_dict())
    except OSError:
        pass
    err.add_note(where)
