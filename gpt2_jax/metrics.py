"""Classification metrics from labels and predictions (class 1 = spam = positive)."""
from __future__ import annotations

import numpy as np


def confusion_matrix(labels, preds, num_classes: int = 2) -> np.ndarray:
    """``m[true, predicted]`` counts."""
    m = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(m, (np.asarray(labels), np.asarray(preds)), 1)
    return m


def _ratio(a, b) -> float:
    return float(a / b) if b else float("nan")


def classification_metrics(labels, preds, loss: float, class_names=("ham", "spam")) -> dict:
    """Loss, accuracy, per-class accuracy, spam precision/recall/F1, confusion matrix."""
    m = confusion_matrix(labels, preds, len(class_names))
    tp, fp, fn = m[1, 1], m[0, 1], m[1, 0]
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * precision * recall, precision + recall) if tp else 0.0
    out = {
        "loss": float(loss),
        "accuracy": _ratio(np.trace(m), m.sum()),
        "n": int(m.sum()),
    }
    for k, name in enumerate(class_names):
        out[f"{name}_accuracy"] = _ratio(m[k, k], m[k].sum())
    out.update(spam_precision=precision, spam_recall=recall, spam_f1=f1,
               confusion=m.tolist())
    return out
