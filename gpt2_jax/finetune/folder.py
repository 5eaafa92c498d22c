"""The run folder: its name, an exclusive lock while a run uses it, and preparing it (fresh, overwritten or resumed)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

from gpt2_jax.data import sms
from gpt2_jax.finetune.config import RunConfig


def run_name(cfg: RunConfig) -> str:
    d = cfg.data
    if d.dataset is not None:  # "stanfordnlp/imdb:plain_text" -> imdb
        return f"{Path(d.dataset.split(':')[0].rstrip('/')).name}-{cfg.model.model_size}"
    stem = (
        "spam"
        if d.data_file is None
        or d.data_format == "sms"
        or Path(d.data_file).name == sms.SMS_FILE_NAME
        else Path(d.data_file).stem
    )
    return f"{stem}-{cfg.model.model_size}"


LOCK_FILE = ".lock"


class RunFolderLock:
    """An exclusive ``flock`` on ``RUN_DIR/.lock`` for as long as a run uses the folder.

    The kernel drops it when the process ends, however it ends (SIGKILL included), so a
    killed run can be resumed at once, while a second run aimed at a folder in use stops
    before touching anything."""

    def __init__(self, folder: Path):
        import fcntl

        self.path = folder / LOCK_FILE
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 200, 0).decode(errors="replace").strip()
            os.close(self._fd)
            raise FileExistsError(
                f"run folder {folder} is in use by another run ({holder}); "
                "wait for it to end or pick another --run-dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(
            self._fd, f"pid {os.getpid()} since {dt.datetime.now():%Y-%m-%d %H:%M:%S}".encode(), 0
        )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def _make_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--run-dir {path} is a file, not a folder; pick another --run-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(
            err.errno,
            f"cannot create the run folder {path}: {err.strerror}; "
            "pick a writable --run-dir or --runs-root",
        ) from None


def prepare_run_dir(cfg: RunConfig, resume: bool = False) -> tuple[Path, RunFolderLock]:
    """A fresh folder for this run, claimed with a lock; an existing non-empty one is
    kept unless ``overwrite`` (and never taken from a run that holds it). Resuming,
    the run's own folder."""
    out = cfg.output
    if resume:
        if out.run_dir is None:
            raise ValueError("resuming needs output.run_dir: the folder of the run to go on with")
        path = Path(out.run_dir)
        return path, RunFolderLock(path)
    if out.run_dir is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(out.runs_root) / f"{run_name(cfg)}-{stamp}"
        path, k = base, 1
        while path.exists():
            k += 1
            path = base.with_name(f"{base.name}-{k}")
    else:
        path = Path(out.run_dir)
    _make_folder(path)
    lock = RunFolderLock(path)
    others = [p for p in path.iterdir() if p.name != LOCK_FILE]
    if others:
        problem = None
        if not out.overwrite:
            problem = "exists and is not empty; pick another --run-dir or pass --overwrite"
        elif not (path / "metrics.json").is_file():
            problem = (
                "is not an earlier run's folder (no metrics.json), so --overwrite will "
                "not empty it; pick another --run-dir"
            )
        else:
            inputs = [
                Path(f).resolve()
                for f in (
                    cfg.data.data_file,
                    cfg.data.val_file,
                    cfg.data.test_file,
                    cfg.model.model_dir,
                )
                if f
            ]
            inside = [str(f) for f in inputs if f.is_relative_to(path.resolve())]
            if inside:
                problem = (
                    f"holds this run's input {', '.join(inside)}, so --overwrite will "
                    "not empty it; pick another --run-dir"
                )
        if problem:
            lock.release()
            raise FileExistsError(f"run folder {path} {problem}")
        for p in others:  # the lock stays: this run holds it
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    return path, lock


class NoLock:
    """Processes other than 0 hold no lock on the run folder: process 0 does."""

    def release(self) -> None:
        pass
