"""Several labels per text: the loss (a sigmoid per label, binary cross-entropy with
per-label positive weights), the metrics of label sets, and the per-label thresholds
chosen on validation.

Targets are ``[N, K]`` 0/1 (label k on text n); the head gives ``K`` logits, label k's
probability is ``sigmoid(logit_k)``, and the predicted set holds every label whose
probability reaches its threshold.

Metric conventions follow ``training.metrics`` (the single-label ones): a label's
precision is NaN when it is never predicted, its recall NaN when it has no support, its
F1 0.0 when it has no true positive; ``macro_f1`` is the mean F1 over the labels with
support. ``micro_f1`` pools every label's counts (NaN when there is nothing to find and
nothing was predicted); ``subset_accuracy`` (also ``accuracy``) is the share of texts
whose whole set is right; ``hamming_loss`` the share of wrong (text, label) pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gpt2_jax.training.loss import parse_class_weights
from gpt2_jax.training.metrics import per_class_metrics

SCORES = ("micro_f1", "subset_accuracy", "hamming_loss")  # --select-by val_<score>
DEFAULT_THRESHOLD = 0.5


def positive_weights(spec: str, targets: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """``[K]`` weight of each label's positive term in the loss (``--class-weights``):
    ``balanced``: negatives / positives of the label in the training rows (a rare label
    weighs as much as its absence); ``none``: 1; or ``NAME=W,...`` for every label."""
    names = list(names)
    if spec == "none":
        return np.ones(len(names), np.float32)
    if spec != "balanced":
        given = parse_class_weights(spec)
        wrong = sorted(set(given) ^ set(names))
        if wrong:
            raise ValueError(
                f"class weights {spec!r}: give one weight for each label and no other "
                f"(labels: {names}; wrong or missing: {wrong})"
            )
        return np.asarray([given[n] for n in names], np.float32)
    targets = np.asarray(targets)
    positive = targets.sum(axis=0).astype(np.float64)
    negative = len(targets) - positive
    never = [n for n, p in zip(names, positive) if p == 0]
    always = [n for n, q in zip(names, negative) if q == 0]
    if never or always:
        said = [f"{never} on no training text"] if never else []
        said += [f"{always} on every training text"] if always else []
        raise ValueError(
            f"balanced label weights: label(s) {'; '.join(said)}, so there is nothing to "
            "balance; use more training rows, drop the label, or --class-weights none"
        )
    return (negative / positive).astype(np.float32)


def per_example_bce(logits, targets, pos_weight):
    """``[B, K], [B, K], [K] -> [B]``: the mean over labels of
    ``-(w_k y log sigmoid(z) + (1 - y) log(1 - sigmoid(z)))``, in log-sigmoid form."""
    y = targets.astype(jnp.float32)
    terms = pos_weight * y * jax.nn.softplus(-logits) + (1 - y) * jax.nn.softplus(logits)
    return jnp.mean(terms, axis=-1)


def multilabel_loss(logits, targets, pos_weight):
    """The batch's loss: the mean of ``per_example_bce``."""
    return jnp.mean(per_example_bce(logits, targets, pos_weight))


def exact_sets(logits, targets):
    """How many rows have every label right at threshold 0.5 (logit >= 0)."""
    return jnp.sum(jnp.all((logits >= 0) == (targets > 0), axis=-1))


def label_sets(probs: np.ndarray, thresholds) -> np.ndarray:
    """``[N, K]`` bool: label k is in text n's set when its probability reaches its
    threshold (one for all, or one per label)."""
    return np.asarray(probs) >= np.asarray(thresholds, np.float64)


def multilabel_metrics(
    targets, probs, loss: float, names: Sequence[str], thresholds=DEFAULT_THRESHOLD
) -> dict[str, Any]:
    """Loss, subset accuracy, Hamming loss, micro/macro F1 and per-label precision,
    recall, F1 and support, JSON-ready (see the module docstring)."""
    y = np.asarray(targets).astype(bool)
    pred = label_sets(probs, thresholds)
    if y.shape != pred.shape or y.ndim != 2 or y.shape[1] != len(names):
        raise ValueError(f"targets {y.shape} and predictions {pred.shape} for {len(names)} labels")
    per_label = {}
    for k, name in enumerate(names):
        t, p = y[:, k], pred[:, k]
        m = np.array([[np.sum(~t & ~p), np.sum(~t & p)], [np.sum(t & ~p), np.sum(t & p)]])
        per_label[name] = per_class_metrics(m, 1)
    tp, fp, fn = np.sum(y & pred), np.sum(~y & pred), np.sum(y & ~pred)
    scored = [c["f1"] for c in per_label.values() if c["support"] > 0]
    n = len(y)
    return {
        "loss": float(loss),
        "accuracy": float(np.mean(np.all(y == pred, axis=1))) if n else float("nan"),
        "n": n,
        "subset_accuracy": float(np.mean(np.all(y == pred, axis=1))) if n else float("nan"),
        "hamming_loss": float(np.mean(y != pred)) if n else float("nan"),
        "micro_f1": float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan"),
        "macro_f1": float(np.mean(scored)) if scored else float("nan"),
        "per_class": per_label,
    }


def best_threshold(probs: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(threshold, F1)`` of one label: among its validation probabilities, the one
    that, as a threshold (``p >= t``), gives the highest F1; of equals the highest
    threshold. With no positive example, ``(0.5, nan)``."""
    p, t = np.asarray(probs, np.float64), np.asarray(truth).astype(bool)
    positives = int(t.sum())
    if positives == 0:
        return DEFAULT_THRESHOLD, float("nan")
    order = np.argsort(-p, kind="stable")
    p, t = p[order], t[order]
    tp, predicted = np.cumsum(t), np.arange(1, len(p) + 1)
    last = np.r_[p[1:] != p[:-1], True]  # the last row of each run of equal probabilities
    f1 = 2 * tp[last] / (predicted[last] + positives)  # 2TP / (2TP + FP + FN)
    best = int(np.argmax(f1))  # the first: the highest threshold of equals
    return float(p[last][best]), float(f1[best])


def choose_thresholds(probs: np.ndarray, targets: np.ndarray) -> tuple[list[float], list[float]]:
    """Each label's ``best_threshold`` on validation: ``(thresholds, their F1)``."""
    chosen = [best_threshold(probs[:, k], targets[:, k]) for k in range(probs.shape[1])]
    return [t for t, _ in chosen], [f for _, f in chosen]


def check_settings(tc, multi_label: bool, n_val: int) -> None:
    """Refuse, in one line, training settings that do not fit the kind of labels
    (``tc``: the run's ``TrainConfig``; ``n_val``: validation rows)."""
    from gpt2_jax.training.config import SELECT_BY_MULTI_LABEL

    if not multi_label:
        if tc.select_by in SELECT_BY_MULTI_LABEL:
            raise ValueError(
                f"--select-by {tc.select_by} scores several labels per text; this run has "
                "one label per text: use val_loss, val_accuracy or val_macro_f1"
            )
        if tc.thresholds != "f1":
            raise ValueError("--thresholds is for several labels per text (--multi-label)")
        return
    single = [
        flag
        for flag, on in (
            ("--decision-threshold", tc.decision_threshold),
            ("--calibrate", tc.calibrate),
            ("--ignore-index", tc.ignore_index is not None),
        )
        if on
    ]
    if single:
        raise ValueError(
            f"{' and '.join(single)} is for one label per text; with several labels per "
            "text each label has its own threshold (--thresholds)"
        )
    if tc.thresholds == "f1" and not n_val:
        raise ValueError(
            "--thresholds f1 chooses each label's threshold on the validation split: give "
            "--val-size > 0 or --val-file, or fix them with --thresholds 0.5"
        )
