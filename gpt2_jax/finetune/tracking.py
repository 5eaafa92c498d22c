"""Experiment tracking: a run's figures in TensorBoard event files and an MLflow run too.

``--log-to tensorboard`` writes event files to ``RUN_DIR/tensorboard/``; ``--log-to
mlflow`` logs one MLflow run to ``--mlflow-uri`` (else ``MLFLOW_TRACKING_URI``, else a
SQLite store ``mlflow.db`` beside the run folder, with artefacts in ``mlartifacts/``
there). Both get each step's loss, learning rate and gradient norm (read back once per
epoch, so no step waits), every numeric figure of each epoch's record in metrics.json
(``val/loss``, ``test/per_class/spam/f1``, ... at step = the epoch) and the run's
configuration as parameters (``train.lr``, ...); MLflow also gets the plots,
``classifier.json`` and ``metrics.json`` when the run ends. Only process 0 writes.

The run calls this module through its hooks only (``open_tracking`` and
``Tracking.hooks``, after ``need_trackers``); tensorboard and mlflow are imported here, when asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gpt2_jax.finetune.config import RunConfig
from gpt2_jax.finetune.job import Hooks
from gpt2_jax.parallel.distributed import is_main, share_outcome
from gpt2_jax.training.optim import step_learning_rates

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"  # in the run folder
MLFLOW_RUN_FILE = "mlflow_run.json"  # in the run folder: the MLflow run it logs to (for --resume)
MLFLOW_DB = "mlflow.db"  # the default store, beside the run folder
MLFLOW_ARTIFACTS = "mlartifacts"  # beside a SQLite store: its experiments' artefacts
EXPERIMENT = "gpt2_jax"  # the MLflow experiment, unless MLFLOW_EXPERIMENT_NAME names another
ARTEFACTS = ("metrics.json", "classifier.json", "config.json")  # and the plots (*.png)
STEP_PREFIX = "batch"  # per-step figures: batch/loss, batch/learning_rate, batch/grad_norm


def figures(record: dict) -> dict[str, float]:
    """The numeric figures of one epoch's record, by their path (``val/loss``,
    ``val/confusion/1/0``, ``train_step_loss``); ``epoch`` itself is the step they are
    logged at. Names are made safe for MLflow (characters other than letters, digits,
    ``_-. `` become ``_``)."""
    out: dict[str, float] = {}

    def walk(value: Any, path: tuple[str, ...]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*path, _safe(str(key))))
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, (*path, str(i)))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out["/".join(path)] = float(value)

    walk({k: v for k, v in record.items() if k != "epoch"}, ())
    return out


def _safe(segment: str) -> str:
    name = re.sub(r"[^\w.\- ]", "_", segment)
    return "_" if name in ("", ".", "..") else name


def config_params(config: dict) -> dict[str, str | int | float | bool]:
    """The run's configuration flattened (``train.lr``, ``output.log_to``); tuples and
    None as text."""
    out: dict[str, str | int | float | bool] = {}
    for group, fields in config.items():
        for name, value in fields.items():
            if not isinstance(value, str | int | float | bool):
                value = json.dumps(list(value) if isinstance(value, tuple) else value)
            out[f"{group}.{name}"] = value
    return out


class Tracker(Protocol):
    def steps(self, first: int, values: dict[str, np.ndarray]) -> None: ...
    def epoch(self, epoch: int, values: dict[str, float]) -> None: ...
    def finish(self, run_dir: Path, status: str) -> None: ...


@dataclasses.dataclass
class Tracking:
    """The trackers of one run, fed by the training loop's hooks: each epoch's step
    values are kept until the epoch is recorded (so an epoch a stop cut short, which
    ``--resume`` trains again, is logged once), then logged with its figures."""

    trackers: dict[str, Tracker]
    cfg: RunConfig
    n_train: int
    pending: list[tuple[int, dict[str, np.ndarray]]] = dataclasses.field(default_factory=list)

    def hooks(self, hooks: Hooks) -> Hooks:
        """``hooks`` with this tracking after the run's own ``on_epoch``."""
        recorded = hooks.on_epoch

        def on_epoch(history: list[dict]) -> None:
            if recorded is not None:
                recorded(history)
            self.on_epoch(history)

        return dataclasses.replace(hooks, on_epoch=on_epoch, on_step_values=self.on_step_values)

    def on_step_values(self, first: int, values: dict[str, np.ndarray]) -> None:
        steps = first + np.arange(len(values["loss"]))
        rates = step_learning_rates(self.cfg.train, self.n_train, steps)
        self.pending.append((first, {**values, "learning_rate": rates}))

    def on_epoch(self, history: list[dict]) -> None:
        record = history[-1]
        for first, values in self.pending:
            self._each("steps", first, {f"{STEP_PREFIX}/{k}": v for k, v in values.items()})
        self.pending.clear()
        self._each("epoch", record["epoch"], figures(record))

    def finish(self, run_dir: Path, status: str) -> None:
        self._each("finish", run_dir, status)

    def _each(self, method: str, *args) -> None:
        """Call ``method`` of every tracker; one that fails is named in the log and
        dropped, and the run goes on."""
        for name, tracker in list(self.trackers.items()):
            try:
                getattr(tracker, method)(*args)
            except Exception as err:  # a tracker's failure must not end the training
                logger.warning(
                    f"WARNING: --log-to {name} failed ({err}); the run goes on without it"
                )
                del self.trackers[name]


def need_trackers(names: tuple[str, ...]) -> None:
    """Raise one clear ``ImportError`` if the library of a tracker in ``names`` is not
    installed (checked before the run folder is made; nothing is imported)."""
    import importlib.util

    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except ValueError:  # in sys.modules as None: blocked
            found = False
        if not found:
            raise ImportError(
                f"--log-to {name} needs the {name} package: pip install gpt2_jax[track]"
            )


@contextlib.contextmanager
def open_tracking(
    cfg: RunConfig, run_dir: Path, n_train: int, resume: bool
) -> Iterator[Tracking | None]:
    """The run's tracking while the block runs (None without ``--log-to``, in processes
    other than 0 and in a dry run); when it ends, the artefacts are logged and each
    tracker is closed with the run's outcome (``FINISHED``, ``KILLED`` on a stop,
    ``FAILED``)."""
    names = cfg.output.log_to
    if not names or cfg.train.epochs == 0:
        yield None
        return
    tracking = None
    try:
        if is_main():
            tracking = Tracking(_start(cfg, run_dir, resume), cfg, n_train)
    except BaseException:
        share_outcome(False, "start the experiment tracking")
        raise
    share_outcome(True, "start the experiment tracking")
    status = "FINISHED"
    try:
        yield tracking
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if tracking is not None:
            tracking.finish(run_dir, status)


class TrackerStartError(RuntimeError):
    """A tracker could not start (a bad ``--mlflow-uri``, a server out of reach): one line."""


def _start(cfg: RunConfig, run_dir: Path, resume: bool) -> dict[str, Tracker]:
    params = config_params(cfg.to_dict())
    trackers: dict[str, Tracker] = {}
    for name in cfg.output.log_to:
        try:
            if name == "tensorboard":
                trackers[name] = TensorBoard(run_dir / TENSORBOARD_DIR, params, resume)
            else:
                trackers[name] = MLflow(cfg.output.mlflow_uri, run_dir, params, resume)
        except Exception as err:  # the library's own errors, of many kinds
            raise _start_error(name, cfg, run_dir, err) from err
    return trackers


def _start_error(name: str, cfg: RunConfig, run_dir: Path, err: Exception) -> TrackerStartError:
    """One line: the tracker, where it was to log, what went wrong and what to do."""
    if name == "tensorboard":
        where, fix = str(run_dir / TENSORBOARD_DIR), "check that the run folder can be written"
    else:
        where = mlflow_uri(cfg.output.mlflow_uri, run_dir)
        fix = (
            "check --mlflow-uri (else MLFLOW_TRACKING_URI) and that its server is up, "
            "or leave out --log-to mlflow"
        )
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
    return TrackerStartError(
        f"--log-to {name} could not start at {where} ({first}): {fix}; nothing was trained"
    )


class TensorBoard:
    """Event files in ``logdir``, written by tensorboard's own writer (no TensorFlow):
    scalars, and the configuration as the HParams dashboard's parameters."""

    def __init__(self, logdir: Path, params: dict, resume: bool):
        from tensorboard.summary import Writer

        logdir.mkdir(parents=True, exist_ok=True)
        if not resume or not any(logdir.glob("*.config")):
            _write_hparams(logdir, params)
        self.writer = Writer(str(logdir))
        logger.info(f"TensorBoard: event files in {logdir} (tensorboard --logdir {logdir.parent})")

    def steps(self, first: int, values: dict[str, np.ndarray]) -> None:
        for tag, series in values.items():
            for i, value in enumerate(series):
                self.writer.add_scalar(tag, value, first + i)

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()

    def finish(self, run_dir: Path, status: str) -> None:
        self.writer.close()


def _write_hparams(logdir: Path, params: dict) -> None:
    """The configuration as one HParams event, in a file of its own (``*.config``)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.plugins.hparams.summary_v2 import hparams_pb
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    events = EventFileWriter(str(logdir), filename_suffix=".config")
    events.add_event(Event(wall_time=time.time(), summary=hparams_pb(params)))
    events.close()


def mlflow_uri(given: str | None, run_dir: Path) -> str:
    """``given``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///`` the run folder's
    parent ``/mlflow.db``."""
    return (
        given
        or os.environ.get("MLFLOW_TRACKING_URI")
        or (f"sqlite:///{(run_dir.parent / MLFLOW_DB).resolve()}")
    )


class MLflow:
    """One MLflow run per run folder (``--resume`` carries on with it), through
    ``MlflowClient``: no global active run is set."""

    def __init__(self, uri: str | None, run_dir: Path, params: dict, resume: bool):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.uri = mlflow_uri(uri, run_dir)
        self.client = MlflowClient(tracking_uri=self.uri)
        known = _read_run_file(run_dir) if resume else None
        if known is not None and known["tracking_uri"] == self.uri:
            self.run_id = known["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self._experiment(), run_name=run_dir.name, tags={"run_dir": str(run_dir)}
            )
            self.run_id = run.info.run_id
            items = [Param(k, str(v)) for k, v in params.items()]
            self.client.log_batch(self.run_id, params=items)
            (run_dir / MLFLOW_RUN_FILE).write_text(
                json.dumps({"tracking_uri": self.uri, "run_id": self.run_id}, indent=1) + "\n"
            )
        logger.info(f"MLflow: run {self.run_id} in {self.uri}")

    def _experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        where = None
        if self.uri.startswith("sqlite:///"):  # artefacts beside the database file
            where = (Path(self.uri[len("sqlite:///") :]).parent / MLFLOW_ARTIFACTS).as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=where)
        except MlflowException as err:  # another worker made it since: use theirs
            found = self.client.get_experiment_by_name(name)
            if err.error_code != "RESOURCE_ALREADY_EXISTS" or found is None:
                raise
            return found.experiment_id

    def steps(self, first: int, values: dict[str, np.ndarray]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, first + i)
            for key, series in values.items()
            for i, value in enumerate(series)
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, epoch) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, run_dir: Path, status: str) -> None:
        files = [run_dir / name for name in ARTEFACTS] + sorted(run_dir.glob("*.png"))
        for path in files:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status)


def _read_run_file(run_dir: Path) -> dict | None:
    """The MLflow run a resumed run goes on with; None if the folder names none. A file
    that is not ``{"tracking_uri": ..., "run_id": ...}`` is named in a warning, and the
    run logs to a new MLflow run (the file is rewritten)."""
    path = run_dir / MLFLOW_RUN_FILE
    if not path.exists():
        return None
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        known = err
    keys = ("tracking_uri", "run_id")
    if isinstance(known, dict) and all(isinstance(known.get(k), str) for k in keys):
        return known
    logger.warning(
        f'WARNING: {path} is not {{"tracking_uri": ..., "run_id": ...}}; the resumed '
        "run logs to a new MLflow run (what was logged before stays where it was)"
    )
    return None
