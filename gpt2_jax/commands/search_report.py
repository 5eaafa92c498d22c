"""What a search leaves in its folder, rewritten after every trial (atomically: workers
share it): the best trial's settings as a rerunnable ``config.json``, the table of trials
(``trials.csv``, ``trials.md``) and Optuna's plots (``history.png``, ``importance.png``)."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gpt2_jax.finetune.record import METRICS_FILE
from gpt2_jax.finetune.report import write_json
from gpt2_jax.util.files import write_text_atomic

logger = logging.getLogger(__name__)

BEST_CONFIG = "config.json"
COLUMNS = ("trial", "state", "value", "epochs_run", "seconds", "prefix_seconds", "note")


def trial_rows(study: optuna.Study, names: list[str]) -> list[dict]:
    """One row per trial: its number, state, value, parameters, times and folder."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        row = {
            "trial": t.number,
            "state": t.state.name.lower(),
            "value": "" if t.value is None else f"{t.value:.6g}",
            **{n: _show(t.params.get(n, "")) for n in names},
            "epochs_run": len(t.intermediate_values),
            "seconds": _number(a.get("seconds")),
            "prefix_seconds": _number(a.get("prefix_seconds")),
            "note": a.get("note", ""),
            "run_dir": a.get("run_dir", ""),
        }
        rows.append(row)
    return rows


def _show(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _number(value) -> str:
    return "" if value is None else f"{value:.1f}"


def write_table(out: Path, study: optuna.Study, names: list[str], metric: str) -> None:
    """``trials.csv`` and ``trials.md`` (the best trial marked)."""
    rows = trial_rows(study, names)
    header = ["trial", "state", "value", *names, *COLUMNS[3:], "run_dir"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "trials.csv", buf.getvalue())
    best = best_trial(study)
    lines = [
        f"Study `{study.study_name}`: value = {metric} of the kept epoch "
        f"({study.direction.name.lower()}d)",
        "",
        "| " + " | ".join(header[:-1]) + " |",
        "|" + "---|" * (len(header) - 1),
    ]
    for row in rows:
        mark = " **best**" if best is not None and row["trial"] == best.number else ""
        cells = [str(row[h]) for h in header[:-1]]
        cells[0] += mark
        lines.append("| " + " | ".join(cells) + " |")
    write_text_atomic(out / "trials.md", "\n".join(lines) + "\n")


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best completed trial, or None before any completed."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def write_best_config(out: Path, study: optuna.Study) -> FrozenTrial | None:
    """The best trial's ``config.json``, copied as it was saved in its run folder:
    ``experiments.finetune --config OUT/config.json`` reruns it (in a folder of its own)."""
    best = best_trial(study)
    if best is None:
        return None
    source = Path(best.user_attrs["run_dir"]) / "config.json"
    text = json.loads(source.read_text())
    write_text_atomic(out / BEST_CONFIG, json.dumps(text, indent=2) + "\n")
    return best


def write_plots(out: Path, study: optuna.Study, names: list[str]) -> list[str]:
    """``history.png`` always (once a trial completed); ``importance.png`` when there
    are at least two parameters and the importances can be computed. Returns what was
    skipped and why."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    skipped = []
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots: list[tuple[str, Callable[[optuna.Study], Any]]] = [
        ("history.png", ovm.plot_optimization_history)
    ]
    if len(names) >= 2 and len(completed) >= 2:
        plots.append(("importance.png", ovm.plot_param_importances))
    else:
        skipped.append("importance.png: needs two or more parameters and two completed trials")
    for name, plot in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                ax = plot(study)
            figure: Any = ax.figure
            figure.savefig(out / name, dpi=100, bbox_inches="tight")
            plt.close(figure)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            skipped.append(f"{name}: {err}")
    return skipped


def drop_checkpoints(run_dir: Path) -> None:
    """A finished or pruned trial is not resumed: its epoch checkpoints only take room."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def mark_pruned(run_dir: Path, why: str) -> None:
    """A pruned trial's folder says so (not how to resume it), its checkpoints removed."""
    drop_checkpoints(run_dir)
    path = run_dir / METRICS_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    record["status"] = f"stopped: {why} (experiments.search)"
    write_json(path, record)


def write_reports(out: Path, study: optuna.Study, names: list[str], metric: str) -> None:
    """Everything above, after a trial ends."""
    write_table(out, study, names, metric)
    write_best_config(out, study)
    for why in write_plots(out, study, names):
        logger.debug(f"plot skipped: {why}")
