"""What a run with several labels per text shows each epoch: a row per split (loss,
subset accuracy, micro-F1, macro-F1, Hamming loss) and a per-label block (precision,
recall, F1, support); its plots add ``micro_f1.png``, ``macro_f1.png`` and ``f1.png``
(each label's F1 on validation). ``finetune.report`` hands such records here."""

from __future__ import annotations

from collections.abc import Sequence

from gpt2_jax.finetune.report import (
    SPLIT_WORDS,
    SPLITS,
    Plot,
    _fmt,
    _line,
    _recall_split,
    _series,
    _split_lines,
    short_names,
    step_loss_line,
)


def is_multi_label(record: dict) -> bool:
    """Whether an epoch's record holds the metrics of label sets."""
    return any("hamming_loss" in record.get(split, {}) for split in SPLITS)


def label_set_table(record: dict, names: Sequence[str]) -> list[str]:
    """The summary rows and, per split, each label's precision/recall/F1/support."""
    titles = ["loss", "subset acc", "micro-F1", "macro-F1", "Hamming"]
    keys = (
        ("loss", "{:.4f}"),
        ("subset_accuracy", "{:.2%}"),
        ("micro_f1", "{:.3f}"),
        ("macro_f1", "{:.3f}"),
        ("hamming_loss", "{:.4f}"),
    )
    lines = [_line("split", titles, titles)]
    for split in SPLITS:
        if split in record:
            lines.append(_line(split, [_fmt(f, record[split].get(k)) for k, f in keys], titles))
    shorts = short_names(names)
    width = max(len(s) for s in shorts) + 2
    stats = (("precision", "{:.3f}"), ("recall", "{:.3f}"), ("f1", "{:.3f}"), ("support", "{:d}"))
    for split in SPLITS:
        if split not in record:
            continue
        lines += [
            "",
            f"{split}: per label (threshold 0.5)",
            " " * (2 + width)
            + "".join(f"{t:>10}" for t in ("precision", "recall", "F1", "support")),
        ]
        for name, short in zip(names, shorts):
            c = record[split].get("per_class", {}).get(name, {})
            lines.append(
                f"  {short:<{width}}" + "".join(f"{_fmt(f, c.get(k)):>10}" for k, f in stats)
            )
    return lines


def label_set_plots(history: list[dict], names: Sequence[str]) -> list[Plot]:
    """Loss, subset accuracy, micro-F1, macro-F1 per split, and each label's F1."""
    step_loss = step_loss_line(history)
    split = _recall_split(history)
    per_label = []
    if split is not None:
        for name in names:
            xs, ys = _series(
                history, split, lambda m, name=name: m.get("per_class", {}).get(name, {}).get("f1")
            )
            per_label.append((name, xs, ys, {"marker": "o"}))
    return [
        Plot(
            "loss.png",
            "binary cross-entropy (mean over labels)",
            _split_lines(history, lambda m: m.get("loss")) + [step_loss],
        ),
        Plot(
            "accuracy.png",
            "subset accuracy (every label right)",
            _split_lines(history, lambda m: m.get("subset_accuracy")),
        ),
        Plot("micro_f1.png", "micro-F1", _split_lines(history, lambda m: m.get("micro_f1"))),
        Plot(
            "macro_f1.png",
            "macro-F1 (mean over labels present)",
            _split_lines(history, lambda m: m.get("macro_f1")),
        ),
        Plot("f1.png", f"F1 per label ({SPLIT_WORDS.get(split or '', 'no')} split)", per_label),
    ]
