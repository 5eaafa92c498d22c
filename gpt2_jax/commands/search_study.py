"""The Optuna study behind ``experiments.search``: opened (or made) in its storage, trials
left behind by killed workers recovered, and each trial run as a fine-tuning run.

A trial runs ``gpt2_jax.finetune.run.run`` in this process, in OUT/trials/<study>-<NNN>,
with the prefix cache in OUT/prefix-cache (unless the runs name their own): the first
trial computes the frozen blocks' outputs, later trials that freeze the same blocks of
the same weights over the same texts read them back. After each epoch the trial reports
its validation score; the pruner may end it there (``TrialPruned`` from the run's
``on_epoch``: the run folder records it as stopped, never as finished).

Recovery: a trial still RUNNING in the storage whose worker (same host) is gone, or one
stopped by Ctrl-C/SIGTERM, is failed and its settings are tried once more as a new
trial. Workers on other hosts are watched by Optuna's heartbeat (a trial silent for
``GRACE`` seconds is failed and retried the same way).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from gpt2_jax.commands.search_report import drop_checkpoints, mark_pruned, write_reports
from gpt2_jax.commands.search_space import Param, apply
from gpt2_jax.finetune.config import RunConfig
from gpt2_jax.finetune.inputs import read_inputs
from gpt2_jax.training.train import NonFiniteError, epoch_score

HEARTBEAT, GRACE = 30, 120  # seconds
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
GIVE_UP = 10  # impossible trials in a row before the search stops


class Impossible(Exception):
    """The sampled settings cannot run with this data: the trial fails, the search goes on."""


def _from_reading_inputs(err: BaseException) -> bool:
    """Whether ``err`` was raised while the run read its inputs (``read_inputs``: the
    data, the backbone's settings, the plan's checks), before anything was trained."""
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is read_inputs.__code__:
            return True
        tb = tb.tb_next
    return False


def open_study(args: argparse.Namespace, out: Path, metric: str) -> optuna.Study:
    """The study named ``--study-name`` in ``--storage`` (made on first use)."""
    url = args.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = optuna.storages.RDBStorage(
        url,
        engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
        heartbeat_interval=HEARTBEAT,
        grace_period=GRACE,
        heartbeat_stale_trial_callback=retry_once,
    )
    direction: Literal["minimize", "maximize"] = (
        "minimize" if metric.endswith("loss") else "maximize"
    )
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=args.prune_after)
        if args.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        storage=storage,
        study_name=args.study_name,
        direction=direction,
        sampler=optuna.samplers.TPESampler(
            n_startup_trials=args.startup_trials, seed=args.sampler_seed
        ),
        pruner=pruner,
        load_if_exists=True,
    )
    made_for = study.user_attrs.get("metric")
    if made_for is None:
        study.set_user_attr("metric", metric)
    elif made_for != metric:
        raise ValueError(
            f"study {args.study_name!r} in {url} scores {made_for}, not {metric}: give "
            f"--metric {made_for} or another --study-name"
        )
    return study


def retry_once(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial's settings again, unless it is itself a retry or was retried."""
    if "retry_of" in trial.user_attrs:
        return
    done = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    if trial.number not in done:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True  # someone else's process, or no pid recorded: leave it to the heartbeat
    return True


def recover(study: optuna.Study) -> list[int]:
    """Fail the trials whose worker on this host is gone, retry those and the stopped
    ones once; the numbers of the trials failed here."""
    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False):
        worker = t.user_attrs.get("worker") or {}
        if t.state == TrialState.RUNNING and worker.get("host") == host:
            if _alive(worker.get("pid")):
                continue
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
        elif not (t.state == TrialState.FAIL and t.user_attrs.get("interrupted")):
            continue
        retry_once(study, t)
    return failed


def pruning_hook(trial: optuna.Trial, metric: str, epochs: int):
    """The run's ``on_epoch``: report each epoch's ``metric`` to ``trial`` and prune when
    the pruner says so, before the last epoch (a trial that trained every epoch keeps its
    result)."""

    def on_epoch(history: list[dict]) -> None:
        last = history[-1]
        if "prefix_seconds" in last:
            trial.set_user_attr("prefix_seconds", last["prefix_seconds"])
        value = epoch_score(last, metric)
        trial.report(value, last["epoch"])
        if last["epoch"] < epochs and trial.should_prune():
            trial.set_user_attr("note", f"pruned after epoch {last['epoch']}")
            raise optuna.TrialPruned(f"pruned after epoch {last['epoch']}: {metric} {value:.4f}")

    return on_epoch


def _quiet(message: str) -> None:
    """A trial's run messages go to its run.log only."""


class Search:
    """The study, its space and the run settings every trial starts from."""

    def __init__(self, out: Path, base: RunConfig, space: list[Param], args, metric: str):
        self.out, self.space, self.metric, self.args = out, space, metric, args
        self.names = [p.name for p in space]
        cache = base.speed.prefix_cache_dir or str(out / "prefix-cache")
        self.base = dataclasses.replace(
            base, speed=dataclasses.replace(base.speed, prefix_cache_dir=cache)
        )
        if not args.verbose:
            optuna.logging.set_verbosity(optuna.logging.ERROR)
        self.study = open_study(args, out, metric)
        self.impossible_in_a_row = 0

    def finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))

    def optimize(self) -> None:
        for number in recover(self.study):
            print(f"trial {number}: its worker is gone; failed, and tried again", flush=True)
        if self.finished() >= self.args.trials:
            print(f"the study has {self.finished()} finished trials already", flush=True)
            return
        self.study.optimize(
            self.objective,
            callbacks=[
                optuna.study.MaxTrialsCallback(self.args.trials, states=FINISHED),
                self.after_trial,
            ],
            catch=(Impossible, NonFiniteError),
        )

    def trial_config(self, trial: optuna.Trial) -> tuple[RunConfig, Path]:
        values = {p.name: p.suggest(trial) for p in self.space}
        run_dir = self.out / "trials" / f"{self.study.study_name}-{trial.number:03d}"
        try:
            cfg = apply(self.base, self.space, values)
        except (ValueError, TypeError) as err:
            trial.set_user_attr("note", str(err).splitlines()[0])
            raise Impossible(str(err)) from None
        output = dataclasses.replace(cfg.output, run_dir=str(run_dir), overwrite=True)
        return dataclasses.replace(cfg, output=output), run_dir

    def objective(self, trial: optuna.Trial) -> float:
        from gpt2_jax.finetune.run import run

        cfg, run_dir = self.trial_config(trial)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
        started = time.perf_counter()
        hook = pruning_hook(trial, self.metric, cfg.train.epochs)
        try:
            record = run(cfg, None if self.args.verbose else _quiet, on_epoch=hook)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except NonFiniteError as err:  # diverged (a high lr): this trial fails, the search goes on
            trial.set_user_attr("note", f"loss not finite at step {err.step} (epoch {err.epoch})")
            drop_checkpoints(run_dir)  # a failed trial is not resumed
            raise
        except ValueError as err:
            if not _from_reading_inputs(err):  # a damaged cache or checkpoint: not the settings
                raise
            trial.set_user_attr("note", str(err).splitlines()[0])  # they do not fit the data
            raise Impossible(str(err).splitlines()[0]) from None
        except optuna.TrialPruned as err:
            mark_pruned(run_dir, str(err))
            raise
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - started)
        drop_checkpoints(run_dir)
        chosen = record["selected"]["epoch"]
        trial.set_user_attr("note", f"kept epoch {chosen}")
        return epoch_score(record["epochs"][chosen - 1], self.metric)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        print(self.describe(trial), flush=True)
        self.report()
        failed_here = trial.state == TrialState.FAIL
        self.impossible_in_a_row = self.impossible_in_a_row + 1 if failed_here else 0
        if self.impossible_in_a_row >= GIVE_UP:
            print(f"{GIVE_UP} trials in a row could not run; stopping", flush=True)
            study.stop()

    def describe(self, trial: FrozenTrial) -> str:
        params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        a = trial.user_attrs
        took = f"{a.get('seconds', 0):.1f} s (prefix {a.get('prefix_seconds', 0):.1f} s)"
        if trial.state == TrialState.COMPLETE:
            return f"trial {trial.number}: {params} -> {self.metric} {trial.value:.4f} in {took}"
        why = f" ({a['note']})" if trial.state == TrialState.FAIL and a.get("note") else ""
        return f"trial {trial.number}: {params} -> {trial.state.name.lower()}{why} in {took}"

    def report(self) -> None:
        write_reports(self.out, self.study, self.names, self.metric)

    def summary(self, seconds: float) -> str:
        trials = self.study.get_trials(deepcopy=False)
        counts = {s: sum(t.state == s for t in trials) for s in TrialState}
        times = [t.user_attrs["seconds"] for t in trials if "seconds" in t.user_attrs]
        lines = [
            f"{counts[TrialState.COMPLETE]} completed, {counts[TrialState.PRUNED]} pruned, "
            f"{counts[TrialState.FAIL]} failed trials; this worker ran {seconds:.0f} s"
        ]
        if len(times) > 1:
            lines.append(
                f"the study's trials: the first {times[0]:.1f} s, the others median "
                f"{statistics.median(times[1:]):.1f} s"
            )
        best = self.study.best_trial if counts[TrialState.COMPLETE] else None
        if best is not None:
            lines.append(f"best: {self.describe(best)}")
            lines.append(
                f"its settings: {self.out / 'config.json'} (`python -m experiments.finetune "
                f"--config {self.out / 'config.json'}` reruns it); table: "
                f"{self.out / 'trials.md'}"
            )
        return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
