"""A grid row's run as a child process that never outlives the grid, and whether a row's
earlier run can be resumed.

A stopped grid (Ctrl-C, SIGTERM, SIGHUP) stops its child: the child gets SIGTERM (after a
moment's grace when Ctrl-C reached it as well), which makes the run record where it
stopped; one still running after ``STOP_WAIT`` seconds is killed, and the grid waits for
it either way. On Linux the child is also told to stop if the grid dies without a word
(SIGKILL).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from gpt2_jax.finetune.record import METRICS_FILE, RunRecord

STOP_WAIT = 30.0  # seconds a stopped run has to record where it stopped before it is killed
CHECKPOINTS = "checkpoints"  # training.checkpoints.CHECKPOINTS_DIR (not imported: it loads JAX)


class Terminated(KeyboardInterrupt):
    """The grid was sent SIGTERM or SIGHUP: it stops like after Ctrl-C."""


def _terminated(signum, frame):
    raise Terminated(signal.Signals(signum).name)


def stop_signals():
    """SIGTERM and SIGHUP raise ``Terminated`` from now on; returns what to restore."""
    return {s: signal.signal(s, _terminated) for s in (signal.SIGTERM, signal.SIGHUP)}


def restore_signals(previous) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_child(argv: list[str], log_path: Path, append: bool = False) -> int:
    """Run ``argv`` with its output in ``log_path``; its return code. Stopped with the
    grid: ``stop_child`` and the stop raised again."""
    linux = sys.platform.startswith("linux")
    with open(log_path, "a" if append else "w") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if linux else None,
        )
        try:
            return proc.wait()
        except BaseException as err:
            stop_child(proc, grace=0.0 if isinstance(err, Terminated) else 2.0)
            raise


def stop_child(proc: subprocess.Popen, grace: float = 0.0, wait: float = STOP_WAIT) -> None:
    """End ``proc`` and wait for it: ``grace`` seconds to end by itself (Ctrl-C reaches
    the child too), then SIGTERM and ``wait`` seconds, then SIGKILL."""
    for action, seconds in ((None, grace), (proc.terminate, wait), (proc.kill, 10.0)):
        if action is not None:
            action()
        try:
            proc.wait(seconds)
            return
        except subprocess.TimeoutExpired:
            continue


def resumable(run_dir: Path) -> bool:
    """An earlier run in ``run_dir`` that started (``metrics.json`` with its config),
    did not finish and saved at least one epoch: ``--resume`` goes on from there."""
    try:
        record = RunRecord.read(run_dir / METRICS_FILE)
    except (OSError, ValueError):
        return False
    saved = run_dir / CHECKPOINTS
    return (
        record.status != "finished"
        and record.config is not None
        and saved.is_dir()
        and any(p.name.isdigit() for p in saved.iterdir())
    )


def last_line(log_path: Path) -> str:
    """The last line a run wrote (its error, when it failed)."""
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return (lines or ["(no output)"])[-1]
