"""Which epoch a run keeps: ``best_epoch`` by a validation score (``epoch_score``), or
the last."""

from __future__ import annotations

import math


def epoch_score(record: dict, by: str) -> float:
    """``record["val"]["loss"]`` for ``by="val_loss"``, and so on."""
    split, metric = by.split("_", 1)
    return float(record[split][metric])


def best_epoch(history: list[dict], by: str) -> int:
    """The epoch the classifier keeps: the last (``by="last"``), or the one with the best
    validation ``by`` (lowest loss, highest accuracy or macro-F1; the earliest of equals;
    NaN never wins, and if every value is NaN the last epoch)."""
    if by == "last" or not history:
        return history[-1]["epoch"] if history else 0
    lower = by.endswith("loss")
    best = None
    for record in history:
        value = epoch_score(record, by)
        if math.isnan(value):
            continue
        if best is None or (value < best[1] if lower else value > best[1]):
            best = (record["epoch"], value)
    return history[-1]["epoch"] if best is None else best[0]
