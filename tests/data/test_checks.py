"""Checks across rows and splits: labels that collide after normalisation, and exact
duplicate texts between train, validation and test."""

import pandas as pd
import pytest

from gpt2_jax.data import checks
from gpt2_jax.data.splits import Splits


def test_label_spellings_that_are_one_class_are_grouped():
    found = checks.label_collisions(["ham", "spam", "Ham", "ham ", "SPAM", "x"])
    assert found.groups == (("ham", "Ham", "ham "), ("spam", "SPAM"))
    assert found.ids == () and found
    ints = checks.label_collisions(["1", "01", "1.0", "2", "+2", "10"])
    assert ints.groups == (("1", "01", "1.0"), ("2", "+2")) and ints.ids == ()
    assert not checks.label_collisions(["ham", "spam"])
    assert not checks.label_collisions(["-1", "1", "10"])


def test_a_column_mixing_integer_ids_and_names_is_found():
    found = checks.label_collisions(["0", "ham", "1", "spam"])
    assert found.groups == () and found.ids == ("0", "1") and found.names == ("ham", "spam")


def test_colliding_labels_are_refused_naming_groups_file_and_column():
    labels = ["ham", "spam", "Ham", "ham"]
    where = [f"t.csv line {n}" for n in (2, 3, 4, 5)]
    with pytest.raises(ValueError) as err:
        checks.check_labels(labels, where, source="data/t.csv", column="kind")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        "data/t.csv, column 'kind': 'ham' (t.csv line 2), 'Ham' (t.csv line 4) differ only "
        "in case, spaces or integer spelling;"
    )
    assert "--labels ham,spam,Ham" in message
    with pytest.raises(ValueError, match=r"mixes integer ids \('0'\) and names \('a'\)"):
        checks.check_labels(["a", "0"], source="x.jsonl")
    checks.check_labels(labels, where, explicit=["ham", "Ham", "spam"])  # --labels settles it
    checks.check_labels(["ham", "spam"], where[:2])


def _frame(texts):
    return pd.DataFrame({"text": texts, "label": ["a"] * len(texts)})


def _splits():
    return Splits(
        train=_frame(["a", "b", "c", "c"]),
        val=_frame(["a", "x", "a", "y"]),
        test=_frame(["b", "y", "z", "a"]),
    )


def test_duplicate_texts_are_counted_per_pair_of_splits():
    report = checks.duplicate_texts(_splits())
    got = {(p.first, p.second): (p.rows, p.texts) for p in report.pairs}
    assert got == {("train", "val"): (2, 1), ("train", "test"): (2, 2), ("val", "test"): (2, 2)}
    assert report.rows == 6
    assert report.as_dict()["train/val"] == {"rows": 2, "texts": 1}
    assert report.line() == (
        "texts shared between splits: train/val 2 rows (1 texts), "
        "train/test 2 rows (2 texts), val/test 2 rows (2 texts)"
    )


def test_duplicates_are_dropped_from_validation_and_test_only():
    splits, dropped = checks.drop_duplicate_texts(_splits())
    assert splits.train["text"].tolist() == ["a", "b", "c", "c"]
    assert splits.val["text"].tolist() == ["x", "y"]
    assert splits.test["text"].tolist() == ["z"]  # 'y' is a kept validation text
    assert dropped == {"val": 2, "test": 3}
    assert checks.duplicate_texts(splits).rows == 0
    with pytest.raises(ValueError, match=r"every one of the 2 val rows repeats"):
        checks.drop_duplicate_texts(Splits(_frame(["a"]), _frame(["a", "a"]), _frame(["b"])))
