"""The training loop's hooks as a run uses them: each epoch recorded in ``metrics.json``,
plotted and logged (process 0 writes), a resumed run carrying on its earlier record, the
trackers fed, and the caller's own hooks called last."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path

from gpt2_jax.finetune.job import Hooks
from gpt2_jax.finetune.record import METRICS_FILE, RunRecord
from gpt2_jax.finetune.report import epoch_table, plot_history, write_json
from gpt2_jax.finetune.tracking import Tracking
from gpt2_jax.training.checkpoints import Restored

logger = logging.getLogger("gpt2_jax.finetune.run")  # the run's lines, as before the move


def recording_hooks(
    run_dir: Path,
    main: bool,
    resume: bool,
    tracking: Tracking | None,
    report: RunRecord,
    classes: tuple[str, ...],
    caller: Hooks,
) -> Hooks:
    """The training loop's hooks that keep ``report`` (and, on process 0, ``metrics.json``
    and the plots) up to date, then call the caller's ``on_epoch`` and ``on_step``;
    resuming, the report carries on the earlier record."""
    if resume:
        previous = RunRecord.read(run_dir / METRICS_FILE)
        report.epochs = previous.epochs
        report.resumed = (previous.resumed or []) + [
            {"after_epoch": 0, "at": dt.datetime.now().isoformat(timespec="seconds")}
        ]

    def on_resume(restored: Restored) -> None:  # called only when resuming
        assert report.resumed is not None  # set above when resuming
        report.resumed[-1].update(
            after_epoch=restored.meta["epoch"],
            skipped=[{"epoch": e, "why": why} for e, why in restored.skipped],
        )
        report.epochs = list(restored.meta["history"])

    def on_epoch(history):
        # a copy: the loop appends the next epoch to its list before that epoch's state
        # is saved, and a stop then must not record it
        report.epochs = list(history)
        if main:
            write_json(run_dir / METRICS_FILE, report.to_dict())
            plot_history(history, run_dir, classes)
        logger.info(epoch_table(history[-1], classes))

    hooks = Hooks(on_epoch=on_epoch, on_step=caller.on_step, on_resume=on_resume)
    if tracking is not None:  # the epoch reaches the trackers before the caller
        hooks = tracking.hooks(hooks)
    return _then(hooks, caller.on_epoch)


def _then(hooks: Hooks, on_epoch) -> Hooks:
    """``hooks`` whose ``on_epoch`` calls ``on_epoch`` too, last (it may stop the run)."""
    if on_epoch is None:
        return hooks
    first = hooks.on_epoch

    def both(history):
        if first is not None:
            first(history)
        on_epoch(history)

    return dataclasses.replace(hooks, on_epoch=both)
