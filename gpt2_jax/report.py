"""What a run shows and keeps: terminal tables, ``metrics.json``, PNG plots."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

SPLITS = ("train", "val", "test")
COLUMNS = (("loss", "loss", "{:.4f}"), ("accuracy", "acc", "{:.2%}"),
           ("ham_accuracy", "ham acc", "{:.2%}"), ("spam_accuracy", "spam acc", "{:.2%}"),
           ("spam_precision", "spam P", "{:.3f}"), ("spam_recall", "spam R", "{:.3f}"),
           ("spam_f1", "spam F1", "{:.3f}"))


def _fmt(fmt: str, value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else fmt.format(value)


def epoch_table(record: dict) -> str:
    """One epoch's metrics, a row per split, plus confusion matrices."""
    head = f"{'split':6}" + "".join(f"{title:>10}" for _, title, _ in COLUMNS) + "   confusion [[TN FP] [FN TP]]"
    lines = [f"epoch {record['epoch']}: training steps {record['train_seconds']:.1f} s, "
             f"evaluation {record['eval_seconds']:.1f} s; mean step loss "
             f"{record['train_step_loss']:.4f}", head]
    for split in SPLITS:
        if split in record:
            m = record[split]
            cells = "".join(f"{_fmt(fmt, m[key]):>10}" for key, _, fmt in COLUMNS)
            lines.append(f"{split:6}{cells}   {m['confusion']}")
    return "\n".join(lines)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write atomically: a crash never leaves a half-written file under ``path``."""
    path = Path(path)
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(obj, indent=2, default=_jsonable))
    os.replace(part, path)


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def plot_history(history: list[dict], out_dir: str | os.PathLike) -> list[Path]:
    """``loss.png``, ``accuracy.png`` and ``spam_recall.png`` per epoch and split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    epochs = [r["epoch"] for r in history]
    written = []
    for key, title in (("loss", "weighted cross-entropy"), ("accuracy", "accuracy"),
                       ("spam_recall", "spam recall (spam accuracy)")):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for split in SPLITS:
            values = [r[split][key] for r in history if split in r]
            if values:
                ax.plot(epochs[: len(values)], values, marker="o", label=split)
        if key == "loss":
            ax.plot(epochs, [r["train_step_loss"] for r in history], linestyle="--",
                    label="train (during epoch)")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{key}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
