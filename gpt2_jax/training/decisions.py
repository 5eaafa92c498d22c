"""Decisions on top of a classifier's probabilities, fitted on validation: a temperature
that calibrates them (``fit_temperature``, measured by ``expected_calibration_error``) and,
for two classes, the threshold on the positive class's probability that meets a target
(``choose_threshold``: a precision or recall to reach, or the best F1).

Plain NumPy on the host: the validation split's logits are small, and the fitting must be
exact and deterministic (no optimizer state, no seed)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

TEMPERATURE_RANGE = (0.05, 20.0)  # searched on 1/T; logits scaled beyond it are degenerate


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def mean_nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    z = np.asarray(logits, np.float64) / temperature
    top = z.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(z - top).sum(axis=-1)) + top[:, 0]
    return float(np.mean(log_z - z[np.arange(len(z)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, tol: float = 1e-6) -> float:
    """The temperature T minimising the mean NLL of ``softmax(logits / T)`` on these
    labelled rows. The NLL is convex in 1/T, so a golden-section search over 1/T in
    ``1 / TEMPERATURE_RANGE`` finds its minimum; dividing by T > 0 never changes the argmax."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("fitting a temperature needs labelled rows (an empty validation split)")
    lo, hi = 1 / TEMPERATURE_RANGE[1], 1 / TEMPERATURE_RANGE[0]
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = mean_nll(logits, labels, 1 / a), mean_nll(logits, labels, 1 / b)
    while hi - lo > tol:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = mean_nll(logits, labels, 1 / a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = mean_nll(logits, labels, 1 / b)
    return 1 / ((lo + hi) / 2)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """The mean gap between confidence (the top probability) and accuracy over ``bins``
    equal-width confidence bins, weighted by how many rows fall in each."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    confidence, predicted = probs.max(axis=-1), probs.argmax(axis=-1)
    correct = predicted == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    gap = 0.0
    for k in range(bins):
        rows = which == k
        if rows.any():
            gap += rows.mean() * abs(confidence[rows].mean() - correct[rows].mean())
    return float(gap)


@dataclasses.dataclass(frozen=True)
class Threshold:
    """Predict the positive class when its probability is >= ``value``; the validation
    figures at that threshold."""

    value: float
    target: str  # "f1", "precision=0.99", "recall=0.95"
    precision: float
    recall: float
    f1: float
    met: bool  # False: no threshold reaches the target; the closest is given


def _figures(scores: np.ndarray, positive: np.ndarray, t: float) -> tuple[float, float, float]:
    chosen = scores >= t
    tp = int(np.sum(chosen & positive))
    precision = tp / int(chosen.sum()) if chosen.any() else 1.0
    recall = tp / int(positive.sum()) if positive.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def check_target(target: str) -> tuple[str, float | None]:
    """``(kind, goal)`` of a threshold target (``f1``, ``precision=P``, ``recall=R``), or a
    ``ValueError`` saying what is accepted."""
    kind, sep, goal = target.partition("=")
    if kind == "f1" and not sep:
        return kind, None
    try:
        want = float(goal) if kind in ("precision", "recall") else math.nan
    except ValueError:
        want = math.nan
    if not 0 < want <= 1:
        raise ValueError(
            f"decision threshold target {target!r}: use f1, precision=P or recall=R with "
            "P, R in (0, 1], e.g. precision=0.99"
        )
    return kind, want


def choose_threshold(scores: np.ndarray, positive: np.ndarray, target: str = "f1") -> Threshold:
    """The threshold on ``scores`` (the positive class's probability, one per validation
    row; ``positive`` says which rows are positive) that meets ``target``:
    ``precision=P``: the lowest threshold whose precision is at least P (so recall is as
    high as it can be); ``recall=R``: the highest threshold whose recall is at least R
    (precision as high as it can be); ``f1``: the threshold with the best F1 (the highest
    such, on ties). Candidates are the scores themselves."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    if not positive.any():
        raise ValueError("choosing a threshold needs positive rows in the validation split")
    kind, want = check_target(target)
    candidates = np.unique(scores)
    figures = [(t, *_figures(scores, positive, t)) for t in candidates]
    if want is None:
        best = max(figures, key=lambda f: (f[3], f[0]))
        return Threshold(float(best[0]), target, *best[1:], met=True)
    column = 1 if kind == "precision" else 2
    meeting = [f for f in figures if f[column] >= want]
    if meeting:
        pick = (
            min(meeting, key=lambda f: f[0])
            if kind == "precision"
            else max(meeting, key=lambda f: f[0])
        )
        return Threshold(float(pick[0]), target, *pick[1:], met=True)
    closest = max(figures, key=lambda f: (f[column], f[0]))
    return Threshold(float(closest[0]), target, *closest[1:], met=False)
