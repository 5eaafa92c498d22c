"""Classification metrics from labels and predictions, for any number of named classes.

Conventions (the lab's since the start, so old ``metrics.json`` files stay comparable):

* precision of a class nobody predicted is NaN (0/0: undefined, not "bad");
* recall of a class with no examples (no support) is NaN, for the same reason;
* F1 is 0.0 whenever the class has no true positive (even where P or R is NaN);
* ``macro_f1`` is the plain mean of the per-class F1 over the classes that have
  support > 0 (a class absent from a split says nothing about that split), NaN
  when no class has any.

The book calls a class's recall its "class accuracy": ``f"{name}_accuracy"``. With two
classes the second one (index 1) is the positive class (spam in the lab) and gets
flat ``precision`` / ``recall`` / ``f1`` keys, as the lab has always printed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """``m[true, predicted]`` counts, shape ``(num_classes, num_classes)``, int64."""
    labels, preds = np.asarray(labels).ravel(), np.asarray(preds).ravel()
    if labels.shape != preds.shape:
        raise ValueError(f"{labels.size} labels but {preds.size} predictions")
    for what, ids in (("label", labels), ("prediction", preds)):
        # np.add.at would wrap negative ids silently onto the wrong class
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(
                f"{what} ids must lie in [0, {num_classes}), got {ids.min()}..{ids.max()}"
            )
    m = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(m, (labels.astype(np.int64), preds.astype(np.int64)), 1)
    return m


def _ratio(a, b) -> float:
    """``a / b`` as a Python float, NaN where ``b`` is 0 (undefined, not zero)."""
    return float(a / b) if b else float("nan")


def per_class_metrics(m: np.ndarray, k: int) -> dict:
    """Precision, recall, F1 and support of class ``k`` from confusion matrix ``m``."""
    tp = m[k, k]
    precision, recall = _ratio(tp, m[:, k].sum()), _ratio(tp, m[k].sum())
    # 2PR/(P+R) rather than 2TP/(2TP+FP+FN): the same number, but bit for bit what
    # the lab's baseline metrics were recorded with
    f1 = _ratio(2 * precision * recall, precision + recall) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": int(m[k].sum())}


def macro_f1(per_class: dict) -> float:
    """Mean F1 over the classes with support > 0; NaN if there are none."""
    scores = [c["f1"] for c in per_class.values() if c["support"] > 0]
    return float(np.mean(scores)) if scores else float("nan")


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    """The names as a list; at least two, distinct, non-empty strings."""
    names = list(class_names)
    if isinstance(class_names, str) or len(names) < 2:
        raise ValueError(f"need a sequence of at least 2 class names, got {class_names!r}")
    if any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"class names must be distinct non-empty strings: {names!r}")
    return names


def classification_metrics(labels, preds, loss: float, class_names: Sequence[str]) -> dict:
    """Loss, accuracy, per-class metrics, macro-F1 and the confusion matrix, JSON-ready.

    ``class_names[i]`` names class id ``i``. Key order starts as the two-class lab's
    always did (loss, accuracy, n, ``<c>_accuracy``..., ``<c1>_precision/recall/f1``,
    confusion) so its ``metrics.json`` reads the same; ``macro_f1``, ``per_class`` follow.
    """
    names = _check_class_names(class_names)
    m = confusion_matrix(labels, preds, len(names))
    per_class = {name: per_class_metrics(m, k) for k, name in enumerate(names)}
    out: dict[str, Any] = {
        "loss": float(loss),
        "accuracy": _ratio(np.trace(m), m.sum()),
        "n": int(m.sum()),
    }
    for name in names:
        out[f"{name}_accuracy"] = per_class[name]["recall"]
    if len(names) == 2:
        pos = names[1]
        for key in ("precision", "recall", "f1"):
            flat = f"{pos}_{key}"
            # e.g. a positive class named "macro" would overwrite macro_f1 below
            if flat in out or flat in ("confusion", "macro_f1", "per_class"):
                raise ValueError(f"class name {pos!r} makes key {flat!r} ambiguous")
            out[flat] = per_class[pos][key]
    out["confusion"] = m.tolist()
    out["macro_f1"] = macro_f1(per_class)
    out["per_class"] = per_class
    return out
