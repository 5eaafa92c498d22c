"""A run's labelled data from a Hugging Face ``datasets`` dataset (``--dataset``): read
by ``data.hf_datasets``, then checked, ordered and split exactly as a file's rows are in
``finetune.inputs.read_data`` (the dataset's validation / test splits take the place of
``--val-file`` / ``--test-file``), so the same rows give the same run."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from gpt2_jax.data import checks
from gpt2_jax.data import splits as splitting
from gpt2_jax.data.hf_datasets import read_dataset
from gpt2_jax.finetune.config import DataConfig

if TYPE_CHECKING:
    from gpt2_jax.finetune.inputs import LabelledData


def read_dataset_data(d: DataConfig, seed: int) -> LabelledData:
    """``read_data`` for ``d.dataset``: every data error before the weights load."""
    from gpt2_jax.finetune.inputs import LabelledData

    assert d.dataset is not None
    read = read_dataset(d.dataset, d.dataset_split, d.text_column, d.label_column)
    df, source = read.table, f"--dataset {d.dataset}"
    order = d.class_order()
    if order is None and read.classes is not None:  # the ClassLabel's order, classes present
        present = set(df["label"])
        order = tuple(name for name in read.classes if name in present)
    checks.check_labels(
        df["label"], df["where"], explicit=d.class_order(), source=source, column=d.label_column
    )
    classes = splitting.class_names(df["label"], order, where=df["where"])
    absent = sorted(set(classes) - set(df["label"]))
    if absent:
        raise ValueError(
            f"--labels names {', '.join(map(repr, absent))}, which never occur(s) "
            f"in {source}; list only the classes the data has"
        )
    df = splitting.add_class_ids(df, classes, what="training")
    splits = _cut(d, seed, df, cut_val="val" not in read.given, cut_test="test" not in read.given)
    given = {k: splitting.add_class_ids(v, classes) for k, v in read.given.items()}
    splits = dataclasses.replace(splits, **given)
    splits, duplicates, dropped = checks.count_duplicates(splits, drop=d.drop_duplicates)
    files = {
        role: f"{source} split {read.splits.get(role, read.splits['train'])}"
        for role in ("train", "val", "test")
    }
    sums = {files[role]: read.sums.get(role, read.sums["train"]) for role in files}
    return LabelledData(splits, classes, files, len(df), [], duplicates, dropped, sums)


def _cut(d: DataConfig, seed: int, df, *, cut_val: bool, cut_test: bool) -> splitting.Splits:
    """The train / validation / test cut of ``df``, as ``read_data`` cuts a file's rows
    (a split the dataset has is not cut)."""
    return splitting.split(
        df,
        *d.cut_sizes(len(df), cut_val, cut_test),
        seed,
        d.balance,
        d.stratify,
        holdout_at=d.holdout_row() if cut_val and cut_test else None,
    )
