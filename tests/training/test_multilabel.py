"""Several labels per text: the metrics counted by hand, the thresholds against a
brute-force search, the loss against its formula, the positive weights from counts."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from gpt2_jax.training.multilabel import (
    best_threshold,
    choose_thresholds,
    multilabel_metrics,
    per_example_bce,
    positive_weights,
)

NAMES = ["a", "b", "c", "d"]
# row: true set / probabilities of a, b, c, d -> the set at 0.5
TARGETS = np.array(
    [
        [1, 1, 0, 0],  # {a, b}      predicted {a}
        [0, 1, 0, 0],  # {b}         predicted {b, c}
        [0, 0, 0, 0],  # {}          predicted {}
        [1, 0, 1, 0],  # {a, c}      predicted {a}
    ]
)
PROBS = np.array(
    [
        [0.9, 0.4, 0.1, 0.1],
        [0.2, 0.8, 0.6, 0.1],
        [0.1, 0.3, 0.2, 0.1],
        [0.7, 0.1, 0.45, 0.1],
    ]
)


def test_metrics_equal_a_hand_count():
    out = multilabel_metrics(TARGETS, PROBS, 0.3, NAMES)
    # a: tp 2 fp 0 fn 0; b: tp 1 fp 0 fn 1; c: tp 0 fp 1 fn 1; d: nothing anywhere
    expected = {"a": (1.0, 1.0, 1.0, 2), "b": (1.0, 0.5, 2 / 3, 2), "c": (0.0, 0.0, 0.0, 1)}
    for name, (p, r, f1, support) in expected.items():
        c = out["per_class"][name]
        assert (c["precision"], c["recall"], c["support"]) == (p, r, support)
        assert c["f1"] == pytest.approx(f1)
    d = out["per_class"]["d"]
    assert math.isnan(d["precision"]) and math.isnan(d["recall"]) and d["f1"] == 0.0
    assert out["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))  # tp 3, fp 1, fn 2
    assert out["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)  # d has no support
    assert out["subset_accuracy"] == out["accuracy"] == 1 / 4  # only the empty row
    assert out["hamming_loss"] == 3 / 16  # b of row 0, c of rows 1 and 3
    assert out["loss"] == 0.3 and out["n"] == 4


def test_per_label_thresholds_change_only_their_label():
    out = multilabel_metrics(TARGETS, PROBS, 0.0, NAMES, [0.5, 0.5, 0.4, 0.5])
    c = out["per_class"]["c"]  # row 3's 0.45 now counts: tp 1, fp 1 (row 1), fn 0
    assert (c["precision"], c["recall"]) == (0.5, 1.0)
    assert out["per_class"]["b"]["f1"] == pytest.approx(2 / 3)
    assert out["subset_accuracy"] == 2 / 4


def _brute_force(probs, truth):
    """Every distinct probability tried as the threshold; the best F1, of equals the
    highest threshold; 0.5 without a positive."""
    if not truth.any():
        return 0.5
    best = None
    for t in sorted(set(probs.tolist()), reverse=True):
        pred = probs >= t
        tp, fp, fn = np.sum(pred & truth), np.sum(pred & ~truth), np.sum(~pred & truth)
        f1 = 2 * tp / (2 * tp + fp + fn)
        if best is None or f1 > best[1]:
            best = (t, f1)
    return best[0]


def test_thresholds_equal_a_brute_force_search():
    rng = np.random.default_rng(0)
    probs = np.round(rng.random((60, 5)), 1)  # rounded: many equal probabilities
    targets = rng.random((60, 5)) < np.array([0.1, 0.3, 0.5, 0.8, 0.0])
    chosen, f1 = choose_thresholds(probs, targets)
    assert chosen == [_brute_force(probs[:, k], targets[:, k]) for k in range(5)]
    assert chosen[4] == 0.5 and math.isnan(f1[4])  # no positive: the default
    at_half = multilabel_metrics(targets[:, :4], probs[:, :4], 0.0, NAMES)
    at_best = multilabel_metrics(targets[:, :4], probs[:, :4], 0.0, NAMES, chosen[:4])
    for name in NAMES:
        assert at_best["per_class"][name]["f1"] >= at_half["per_class"][name]["f1"]


def test_one_threshold_separating_the_classes_is_found():
    t, f1 = best_threshold(np.array([0.2, 0.9, 0.35, 0.6]), np.array([0, 1, 0, 1]))
    assert (t, f1) == (0.6, 1.0)
    # 0.9 and 0.3 both give F1 2/3: the higher threshold is kept
    t, f1 = best_threshold(np.array([0.9, 0.7, 0.5, 0.3]), np.array([1, 0, 0, 1]))
    assert t == 0.9 and f1 == pytest.approx(2 / 3)


def test_loss_is_the_weighted_binary_cross_entropy():
    logits = np.array([[2.0, -1.0, 0.5], [-3.0, 0.2, 1.0]])
    y = np.array([[1, 0, 1], [0, 1, 0]])
    w = np.array([2.0, 1.0, 0.5])
    p = 1 / (1 + np.exp(-logits))
    expected = -(w * y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=1)
    got = per_example_bce(jnp.asarray(logits), jnp.asarray(y), jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)


def test_positive_weights_from_the_training_counts():
    y = np.array([[1, 0], [0, 1], [0, 1], [0, 1]])
    np.testing.assert_allclose(positive_weights("balanced", y, ["x", "z"]), [3.0, 1 / 3])
    np.testing.assert_array_equal(positive_weights("none", y, ["x", "z"]), [1, 1])
    np.testing.assert_array_equal(positive_weights("x=2,z=0.5", y, ["x", "z"]), [2, 0.5])
    with pytest.raises(ValueError, match=r"\['z'\] on every training text"):
        positive_weights("balanced", np.array([[0, 1], [1, 1]]), ["x", "z"])
    with pytest.raises(ValueError, match="one weight for each label"):
        positive_weights("x=2", y, ["x", "z"])
