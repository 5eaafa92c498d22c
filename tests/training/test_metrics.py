"""Metrics for k named classes; the two-class lab keeps its keys, order and numbers.

Every expected number below was counted by hand from the label/prediction lists.
"""

import json
import math

import numpy as np
import pytest

from gpt2_jax.training.metrics import classification_metrics, confusion_matrix

# 3 classes, 10 examples. By true class:
#   cat  (0): predicted 0, 0, 1, 2  -> row [2, 1, 1]
#   dog  (1): predicted 1, 1, 0     -> row [1, 2, 0]
#   bird (2): predicted 2, 2, 1     -> row [0, 1, 2]
THREE = ["cat", "dog", "bird"]
LABELS3 = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PREDS3 = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]

# the lab's shape: 6 ham (one called spam), 4 spam (two called ham)
LABELS2 = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
PREDS2 = [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]


def test_confusion_matrix_rows_are_true_columns_predicted():
    m = confusion_matrix(LABELS3, PREDS3, 3)
    assert m.tolist() == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert m.dtype == np.int64
    assert confusion_matrix([], [], 4).tolist() == [[0] * 4] * 4


@pytest.mark.parametrize("labels, preds", [([0, 3], [0, 1]), ([0, 1], [-1, 1]), ([0], [0, 1])])
def test_confusion_matrix_rejects_bad_ids(labels, preds):
    with pytest.raises(ValueError):
        confusion_matrix(labels, preds, 3)


def test_three_classes_hand_counted():
    out = classification_metrics(LABELS3, PREDS3, 1.25, THREE)
    assert out["loss"] == 1.25
    assert out["n"] == 10
    assert out["accuracy"] == pytest.approx(6 / 10)  # diagonal 2 + 2 + 2
    assert out["confusion"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    # precision = diagonal / column sum, recall = diagonal / row sum
    expected = {
        "cat": (2 / 3, 2 / 4, 4 / 7, 4),  # F1 = 2*(2/3)*(1/2) / (2/3 + 1/2) = 4/7
        "dog": (2 / 4, 2 / 3, 4 / 7, 3),  # F1 = 2*(1/2)*(2/3) / (1/2 + 2/3) = 4/7
        "bird": (2 / 3, 2 / 3, 2 / 3, 3),
    }
    assert list(out["per_class"]) == THREE
    for name, (p, r, f1, support) in expected.items():
        c = out["per_class"][name]
        assert c["precision"] == pytest.approx(p)
        assert c["recall"] == pytest.approx(r)
        assert c["f1"] == pytest.approx(f1)
        assert c["support"] == support and type(c["support"]) is int
        assert out[f"{name}_accuracy"] == pytest.approx(r)
    assert out["macro_f1"] == pytest.approx((4 / 7 + 4 / 7 + 2 / 3) / 3)  # = 38/63
    # the flat positive-class keys exist only for two classes
    assert not any(k.endswith(("_precision", "_recall", "_f1")) for k in out if k != "macro_f1")
    assert list(out) == [
        "loss",
        "accuracy",
        "n",
        "cat_accuracy",
        "dog_accuracy",
        "bird_accuracy",
        "confusion",
        "macro_f1",
        "per_class",
    ]


def test_two_classes_keep_the_labs_keys_order_and_numbers():
    out = classification_metrics(
        np.array(LABELS2), np.array(PREDS2), np.float32(0.5), ("ham", "spam")
    )
    assert list(out) == [
        "loss",
        "accuracy",
        "n",
        "ham_accuracy",
        "spam_accuracy",
        "spam_precision",
        "spam_recall",
        "spam_f1",
        "confusion",
        "macro_f1",
        "per_class",
    ]
    assert out["confusion"] == [[5, 1], [2, 2]]  # [[TN FP] [FN TP]]
    assert out["n"] == 10
    assert out["accuracy"] == pytest.approx(7 / 10)
    assert out["ham_accuracy"] == pytest.approx(5 / 6)
    assert out["spam_accuracy"] == pytest.approx(2 / 4)
    assert out["spam_precision"] == pytest.approx(2 / 3)
    assert out["spam_recall"] == out["spam_accuracy"]
    assert out["spam_f1"] == pytest.approx(4 / 7)  # 2*(2/3)*(1/2) / (2/3 + 1/2)
    ham = out["per_class"]["ham"]
    assert (ham["precision"], ham["recall"], ham["support"]) == (
        pytest.approx(5 / 7),
        pytest.approx(5 / 6),
        6,
    )
    assert ham["f1"] == pytest.approx(10 / 13)  # 2*(5/7)*(5/6) / (5/7 + 5/6)
    assert out["macro_f1"] == pytest.approx((10 / 13 + 4 / 7) / 2)


def test_result_is_plain_json_ready_python():
    out = classification_metrics(np.array(LABELS3), np.array(PREDS3), np.float32(1.0), THREE)
    json.dumps(out)  # no numpy scalars left anywhere
    assert type(out["loss"]) is float and type(out["n"]) is int
    assert all(type(x) is int for row in out["confusion"] for x in row)
    assert all(type(v) is float for k, v in out.items() if k.endswith("_accuracy"))


def test_nan_conventions():
    # no spam in the data and none predicted: precision 0/0, recall 0/0 -> NaN, F1 0.0
    out = classification_metrics([0, 0], [0, 0], 0.1, ["ham", "spam"])
    assert math.isnan(out["spam_precision"]) and math.isnan(out["spam_recall"])
    assert math.isnan(out["spam_accuracy"])
    assert out["spam_f1"] == 0.0
    assert out["per_class"]["spam"]["support"] == 0
    assert out["macro_f1"] == 1.0  # only ham has support
    # spam present but never predicted: precision NaN, recall 0, F1 0
    out = classification_metrics([0, 1], [0, 0], 0.1, ["ham", "spam"])
    assert math.isnan(out["spam_precision"])
    assert out["spam_recall"] == 0.0 and out["spam_f1"] == 0.0
    assert out["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)  # ham: P 1/2, R 1
    # predicted but wrong: precision 0 (not NaN), F1 0
    out = classification_metrics([0, 0, 2], [1, 0, 2], 0.1, THREE)
    assert out["per_class"]["dog"]["precision"] == 0.0
    assert math.isnan(out["per_class"]["dog"]["recall"])
    assert out["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)  # dog has no support
    # nothing at all
    out = classification_metrics([], [], 0.0, THREE)
    assert out["n"] == 0 and math.isnan(out["accuracy"]) and math.isnan(out["macro_f1"])


@pytest.mark.parametrize("names", [["only"], "ab", ["a", "a"], ["a", ""], ["ham", "macro"]])
def test_bad_class_names(names):
    with pytest.raises(ValueError):
        classification_metrics([0], [0], 0.0, names)
