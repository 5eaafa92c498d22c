"""Decisions fitted on validation: a temperature that lowers the NLL without changing any
prediction, and thresholds that meet their target, checked against brute force."""

import numpy as np
import pytest

from gpt2_jax.training.decisions import (
    choose_threshold,
    expected_calibration_error,
    fit_temperature,
    mean_nll,
    softmax,
)


def _overconfident(n=600, classes=3, seed=0):
    """Logits of a model that is right ~70 % of the time but far too sure of itself."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(0, 1, (n, classes))
    right = rng.random(n) < 0.7
    logits[np.arange(n), np.where(right, labels, (labels + 1) % classes)] += 2.0
    return 6.0 * logits, labels


def test_temperature_minimises_the_nll_and_keeps_every_prediction():
    logits, labels = _overconfident()
    t = fit_temperature(logits, labels)
    grid = np.geomspace(0.05, 20, 4001)  # brute force, T 0.15 % apart
    best = min(grid, key=lambda g: mean_nll(logits, labels, g))
    assert t == pytest.approx(best, rel=2e-3)
    assert mean_nll(logits, labels, t) <= mean_nll(logits, labels, best) + 1e-12
    assert mean_nll(logits, labels, t) < mean_nll(logits, labels, 1.0)
    assert t > 1  # an overconfident model is cooled
    np.testing.assert_array_equal(softmax(logits, t).argmax(-1), logits.argmax(-1))
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, t), labels)
    assert after < before / 2


def test_ece_of_a_perfectly_calibrated_bin_is_zero_and_of_a_sure_mistake_is_one():
    probs = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([[1.0, 0.0]]), np.array([1])) == 1.0


def _sweep(scores, positive):
    """Every candidate threshold with its precision, recall and F1, computed plainly."""
    rows = []
    for t in sorted(set(scores.tolist())):
        tp = sum(1 for s, p in zip(scores, positive) if s >= t and p)
        chosen = sum(1 for s in scores if s >= t)
        precision, recall = tp / chosen, tp / sum(positive)
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        rows.append((t, precision, recall, f1))
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thresholds_equal_a_brute_force_sweep_and_meet_their_target(seed):
    rng = np.random.default_rng(seed)
    positive = rng.random(300) < 0.3
    scores = np.clip(rng.normal(0.35 + 0.3 * positive, 0.2), 0, 1).round(3)
    sweep = _sweep(scores, positive)

    got = choose_threshold(scores, positive, "precision=0.9")
    ok = [r for r in sweep if r[1] >= 0.9]
    assert got.met and got.value == min(r[0] for r in ok) and got.precision >= 0.9

    got = choose_threshold(scores, positive, "recall=0.95")
    ok = [r for r in sweep if r[2] >= 0.95]
    assert got.met and got.value == max(r[0] for r in ok) and got.recall >= 0.95

    got = choose_threshold(scores, positive, "f1")
    assert got.f1 == pytest.approx(max(r[3] for r in sweep))


def test_an_unreachable_target_is_said_and_bad_targets_refused():
    scores, positive = np.array([0.9, 0.8, 0.1]), np.array([True, False, True])
    got = choose_threshold(scores, positive, "precision=1.0")
    assert got.met and got.value == 0.9 and got.recall == 0.5  # only 0.9 keeps precision 1
    got = choose_threshold(np.array([0.9, 0.2]), np.array([False, True]), "precision=0.99")
    assert not got.met and got.precision == 0.5
    for bad in ("accuracy", "precision=", "recall=1.5", "precision=abc"):
        with pytest.raises(ValueError):
            choose_threshold(scores, positive, bad)
