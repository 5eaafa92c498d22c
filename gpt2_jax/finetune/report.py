"""What a run shows and keeps: terminal tables, ``metrics.json``, PNG plots.

Two classes (the lab: ham, spam) keep the lab's layout and file names; with k > 2
classes the table shows macro-F1 and per-class recall, then a per-class block with the
confusion matrix, and the plots add ``recall.png`` and ``macro_f1.png``. Everything
here reads metrics dicts from :func:`gpt2_jax.training.metrics.classification_metrics`; keys
that an older ``metrics.json`` lacks show as ``n/a`` rather than failing a resume.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

from gpt2_jax.util.files import write_text_atomic

SPLITS = ("train", "val", "test")
SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}
COLUMN_WIDTH = 10  # the lab's table; wider only when a title needs it
NAME_WIDTH = 12  # longest class name shown whole in a table


def _fmt(fmt: str, value) -> str:
    """``value`` formatted, or ``n/a`` where it is missing or NaN (undefined ratios)."""
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else fmt.format(value)
    )


def short_name(name: str, width: int = NAME_WIDTH) -> str:
    """``name`` cut to ``width`` characters by eliding its middle with ``~``.

    The middle goes because names often differ at the end (``label_1``, ``label_2``);
    ``~`` rather than an ellipsis so that logs on an ASCII-only terminal don't fail.
    """
    if len(name) <= width:
        return name
    head = width // 2  # the extra character, if any, goes to the start
    tail = width - 1 - head
    return name[:head] + "~" + (name[-tail:] if tail else "")


def short_names(class_names: Sequence[str], width: int = NAME_WIDTH) -> list[str]:
    """Distinct shortened names; where elision makes two equal, each gets its id in front."""
    names = [short_name(n, width) for n in class_names]
    if len(set(names)) == len(names):
        return names
    return [
        short_name(n, width)
        if len(n) <= width
        else f"{i}:" + short_name(n, max(width - len(f"{i}:"), 1))
        for i, n in enumerate(class_names)
    ]


def _width(title: str) -> int:
    """A column's width: the lab's 10, or more so that its title keeps spaces before it."""
    return max(COLUMN_WIDTH, len(title) + 2)


def _line(first: str, cells, titles) -> str:
    """``first`` (split name) then ``cells`` right-aligned under their ``titles``."""
    return f"{first:6}" + "".join(f"{c:>{_width(t)}}" for c, t in zip(cells, titles))


def _binary_columns(names: Sequence[str]) -> list[tuple[str, str, str]]:
    """(metrics key, title, format) of the two-class table: the lab's columns."""
    c0, c1 = names
    s0, s1 = short_names(names)
    return [
        ("loss", "loss", "{:.4f}"),
        ("accuracy", "acc", "{:.2%}"),
        (f"{c0}_accuracy", f"{s0} acc", "{:.2%}"),
        (f"{c1}_accuracy", f"{s1} acc", "{:.2%}"),
        (f"{c1}_precision", f"{s1} P", "{:.3f}"),
        (f"{c1}_recall", f"{s1} R", "{:.3f}"),
        (f"{c1}_f1", f"{s1} F1", "{:.3f}"),
    ]


def _binary_table(record: dict, names: Sequence[str]) -> list[str]:
    """The lab's table: a row per split, the 2x2 confusion matrix inline."""
    columns = _binary_columns(names)
    titles = [title for _, title, _ in columns]
    lines = [_line("split", titles, titles) + "   confusion [[TN FP] [FN TP]]"]
    for split in SPLITS:
        if split in record:
            m = record[split]
            cells = [_fmt(fmt, m.get(key)) for key, _, fmt in columns]
            lines.append(_line(split, cells, titles) + f"   {m.get('confusion')}")
    return lines


def _recall(metrics: dict, name: str):
    """Recall of class ``name`` in one split's metrics, None where it isn't recorded."""
    return metrics.get("per_class", {}).get(name, {}).get("recall")


def _multiclass_summary(record: dict, names: Sequence[str]) -> list[str]:
    """A row per split: loss, accuracy, macro-F1 and every class's recall."""
    shorts = short_names(names)
    titles = ["loss", "acc", "macro-F1"] + [f"{s} R" for s in shorts]
    lines = [_line("split", titles, titles)]
    for split in SPLITS:
        if split in record:
            m = record[split]
            cells = [
                _fmt("{:.4f}", m.get("loss")),
                _fmt("{:.2%}", m.get("accuracy")),
                _fmt("{:.3f}", m.get("macro_f1")),
            ]
            cells += [_fmt("{:.3f}", _recall(m, name)) for name in names]
            lines.append(_line(split, cells, titles))
    return lines


def _class_block(split: str, metrics: dict, names: Sequence[str]) -> list[str]:
    """One split's per-class precision/recall/F1/support, each row followed by that
    true class's row of the confusion matrix (columns = predicted class)."""
    shorts = short_names(names)
    confusion = metrics.get("confusion") or [[None] * len(names) for _ in names]
    name_w = max(len(s) for s in shorts) + 2
    # column j holds predicted class j: as wide as its name or its largest count
    count_w = [
        max(len(s), *(len(str(row[j])) for row in confusion)) + 2 for j, s in enumerate(shorts)
    ]
    stats = (("precision", "{:.3f}"), ("recall", "{:.3f}"), ("f1", "{:.3f}"), ("support", "{:d}"))
    lines = [
        f"{split}: per class; confusion rows = true class, columns = predicted",
        " " * (2 + name_w)
        + "".join(f"{t:>10}" for t in ("precision", "recall", "F1", "support"))
        + "  |"
        + "".join(f"{s:>{w}}" for s, w in zip(shorts, count_w)),
    ]
    for name, short, row in zip(names, shorts, confusion):
        c = metrics.get("per_class", {}).get(name, {})
        cells = "".join(f"{_fmt(fmt, c.get(key)):>10}" for key, fmt in stats)
        counts = "".join(f"{_fmt('{}', n):>{w}}" for n, w in zip(row, count_w))
        lines.append(f"  {short:<{name_w}}{cells}  |{counts}")
    return lines


def epoch_table(record: dict, class_names: Sequence[str]) -> str:
    """One epoch's metrics: a row per split present in ``record``, plus confusion matrices.

    Two classes print the lab's table unchanged; more classes print a summary row per
    split (loss, accuracy, macro-F1, recall per class) and then a per-class block per split.
    """
    names = list(class_names)
    lines = [
        f"epoch {record['epoch']}: training steps {record['train_seconds']:.1f} s, "
        f"evaluation {record['eval_seconds']:.1f} s; mean step loss "
        f"{record['train_step_loss']:.4f}"
    ]
    from gpt2_jax.finetune import multilabel_report as sets  # it imports this module

    if sets.is_multi_label(record):
        return "\n".join(lines + sets.label_set_table(record, names))
    if len(names) == 2:
        return "\n".join(lines + _binary_table(record, names))
    lines += _multiclass_summary(record, names)
    for split in SPLITS:
        if split in record:
            lines += [""] + _class_block(split, record[split], names)
    return "\n".join(lines)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write atomically: a crash never leaves a half-written file under ``path``."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=_jsonable))


def _jsonable(value):
    """What ``json`` can't write itself: arrays, sets, tuples, paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _file_stem(name: str) -> str:
    """A class name made safe for a file name (``spam`` stays ``spam``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"


def _series(history: list[dict], split: str, value) -> tuple[list, list]:
    """(epochs, values) of the records that have ``split``; ``value(metrics)`` reads one,
    None (e.g. a key an older record lacks) becomes NaN, a gap in the line."""
    points = [(r["epoch"], value(r[split])) for r in history if split in r]
    return [e for e, _ in points], [float("nan") if v is None else v for _, v in points]


def _split_lines(history: list[dict], value) -> list[tuple[str, list, list, dict]]:
    """One line per split present in ``history``: (label, epochs, values, plot style)."""
    lines = []
    for split in SPLITS:
        xs, ys = _series(history, split, value)
        if xs:
            lines.append((split, xs, ys, {"marker": "o"}))
    return lines


UNIT_RANGE = (0.0, 1.0)  # accuracy, recall, F1: the same scale on every plot and run


@dataclasses.dataclass
class Plot:
    """One figure as drawn: its file name, title, lines (label, epochs, values, style),
    the y-range where it is fixed, and the marked (selected) epoch."""

    file: str
    title: str
    lines: list
    ylim: tuple[float, float] | None = None
    selected: int | None = None


def draw(plot: Plot, epochs: list):
    """``plot`` as a matplotlib figure: lines against epoch, the selected epoch a dotted
    vertical line, the legend outside the data area (right of it) with full names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, xs, ys, style in plot.lines:
        ax.plot(xs, ys, label=label, clip_on=plot.ylim is None, **style)
    if plot.selected is not None:
        ax.axvline(plot.selected, color="0.4", linestyle=":", label=f"kept: epoch {plot.selected}")
    ax.set_xlabel("epoch")
    ax.set_title(plot.title)
    ax.set_xticks(epochs)
    if plot.ylim is not None:
        ax.set_ylim(*plot.ylim)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # an empty legend only makes matplotlib warn
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
            fontsize="small" if len(plot.lines) > 4 else None,
        )
    return fig  # no tight_layout: it would shrink the axes to make room for the legend


def _save_plot(plot: Plot, out_dir: Path, epochs: list) -> Path:
    """Draw ``plot`` and save it as a PNG in ``out_dir``; the image grows to the right
    to hold the legend (``bbox_inches="tight"``), the axes keep their size."""
    import matplotlib.pyplot as plt

    fig = draw(plot, epochs)
    path = out_dir / plot.file
    try:
        fig.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def step_loss_line(history: list[dict]) -> tuple[str, list, list, dict]:
    """The training steps' mean loss per epoch, dashed, for the loss plot."""
    epochs = [r["epoch"] for r in history]
    losses = [r.get("train_step_loss", float("nan")) for r in history]
    return ("train (during epoch)", epochs, losses, {"linestyle": "--"})


def _recall_split(history: list[dict]) -> str | None:
    """The split whose per-class recall is plotted: validation, else test, else train."""
    return next((s for s in ("val", "test", "train") if any(s in r for r in history)), None)


def history_plots(
    history: list[dict], class_names: Sequence[str], selected: int | None = None
) -> list[Plot]:
    """What :func:`plot_history` draws, figure by figure (see there)."""
    from gpt2_jax.finetune import multilabel_report as sets  # it imports this module

    names = list(class_names)
    if history and sets.is_multi_label(history[-1]):
        return _finish(sets.label_set_plots(history, names), selected)
    step_loss = step_loss_line(history)
    plots = [
        Plot(
            "loss.png",
            "weighted cross-entropy",
            _split_lines(history, lambda m: m.get("loss")) + [step_loss],
        ),
        Plot("accuracy.png", "accuracy", _split_lines(history, lambda m: m.get("accuracy"))),
    ]
    if len(names) == 2:
        pos = names[1]
        plots.append(
            Plot(
                f"{_file_stem(pos)}_recall.png",
                f"{pos} recall ({pos} accuracy)",
                _split_lines(history, lambda m: m.get(f"{pos}_recall")),
            )
        )
    else:
        split = _recall_split(history)
        per_class = []
        if split is not None:
            for name in names:
                xs, ys = _series(history, split, lambda m, name=name: _recall(m, name))
                per_class.append((name, xs, ys, {"marker": "o"}))
        plots.append(
            Plot(
                "recall.png",
                f"recall per class ({SPLIT_WORDS.get(split or '', 'no')} split)",
                per_class,
            )
        )
        plots.append(
            Plot(
                "macro_f1.png",
                "macro-F1 (mean over classes present)",
                _split_lines(history, lambda m: m.get("macro_f1")),
            )
        )
    return _finish(plots, selected)


def _finish(plots: list[Plot], selected: int | None) -> list[Plot]:
    """Every plot marks the selected epoch; all but the loss share the range 0 to 1."""
    for plot in plots:
        plot.selected = selected
        if plot.file != "loss.png":
            plot.ylim = UNIT_RANGE
    return plots


def plot_history(
    history: list[dict],
    out_dir: str | os.PathLike,
    class_names: Sequence[str],
    selected: int | None = None,
) -> list[Path]:
    """Per-epoch plots; returns the files written.

    Always ``loss.png`` (per split, plus the mean training-step loss dashed) and
    ``accuracy.png``. Two classes: ``<c1>_recall.png``, recall of the positive class per
    split (the lab's ``spam_recall.png``). More classes: ``recall.png``, a line per class
    on one split, and ``macro_f1.png`` per split. Accuracy, recall and F1 share the
    y-range 0 to 1; legends (full class names) sit right of the axes; ``selected``, the
    epoch whose weights the classifier keeps, is a dotted vertical line.
    """
    epochs = [r["epoch"] for r in history]
    return [
        _save_plot(plot, Path(out_dir), epochs)
        for plot in history_plots(history, class_names, selected)
    ]
