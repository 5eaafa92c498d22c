"""Training from a Hugging Face ``datasets`` dataset (``--dataset``): a dataset saved
with ``save_to_disk`` or a folder of data files trains to the same figures as the same
rows in CSV files, and bad split or column names stop the run with one line."""

import csv
import json
import random
import sys

import pytest

from gpt2_jax.commands import finetune
from gpt2_jax.util.machine import machine_name

datasets = pytest.importorskip("datasets")

WORDS = {"ham": "see you at {n} then, ok?", "spam": "WIN {n} cash now, call {n}!"}
TRAIN = ["--train-size", "24", "--val-size", "8", "--test-size", "8"]


def _rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = [(WORDS[k].format(n=rng.randint(1, 999)), k) for k in ("ham", "spam") for _ in range(n)]
    rng.shuffle(rows)
    return rows


def _csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "body", "kind"])
        w.writerows((i, text, kind) for i, (text, kind) in enumerate(rows))
    return path


def _dataset(rows, class_label: bool):
    kind = [k for _, k in rows]
    features = datasets.Features(
        {
            "body": datasets.Value("string"),
            "kind": datasets.ClassLabel(names=["ham", "spam"])
            if class_label
            else datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict({"body": [t for t, _ in rows], "kind": kind}, features)


def _train(source: list[str], model_dir, run_dir) -> list[dict]:
    args = [*source, "--text-column", "body", "--label-column", "kind"]
    args += ["--model-dir", str(model_dir), "--run-dir", str(run_dir), "--epochs", "2"]
    args += ["--batch-size", "8", "--memory-budget-gib", "0.001", "--trainable", "last_layer"]
    assert finetune.main(args) == 0
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["data"]["classes"] == ["ham", "spam"]
    assert report["machine"].startswith(machine_name() + "; ")  # for the model card
    return [{k: v for k, v in e.items() if not k.endswith("seconds")} for e in report["epochs"]]


@pytest.mark.slow
def test_a_saved_dataset_trains_as_the_same_rows_from_csv(tiny_model_dir, tmp_path):
    rows = _rows(20, seed=3)
    from_csv = _train(
        ["--data-file", str(_csv(tmp_path / "d.csv", rows)), *TRAIN], tiny_model_dir, tmp_path / "c"
    )
    _dataset(rows, class_label=True).save_to_disk(str(tmp_path / "saved"))
    from_disk = _train(
        ["--dataset", str(tmp_path / "saved"), *TRAIN], tiny_model_dir, tmp_path / "s"
    )
    assert len(from_csv) == 2 and "test" in from_csv[-1]
    assert from_disk == from_csv


def _frames(labelled):
    return {k: v[["text", "label", "y"]].reset_index(drop=True) for k, v in labelled.splits.items()}


def test_named_splits_take_the_place_of_val_and_test_files(tmp_path, monkeypatch):
    from gpt2_jax.finetune.config import DataConfig
    from gpt2_jax.finetune.inputs import read_data

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    monkeypatch.setattr("gpt2_jax.data.hf_datasets.READ_ROWS", 5)  # 12 rows: read in 3 slices
    parts = {"train": _rows(12, 1), "validation": _rows(3, 2), "test": _rows(4, 3)}
    folder = tmp_path / "csv-folder"  # a folder of data files, read by load_dataset
    folder.mkdir()
    for name, rows in parts.items():
        _csv(folder / f"{name}.csv", rows)
    columns = {"text_column": "body", "label_column": "kind", "train_size": 24}
    from_files = read_data(
        DataConfig(
            data_file=str(folder / "train.csv"),
            val_file=str(folder / "validation.csv"),
            test_file=str(folder / "test.csv"),
            **columns,
        ),
        seed=123,
    )
    saved = tmp_path / "saved"
    datasets.DatasetDict({k: _dataset(v, class_label=True) for k, v in parts.items()}).save_to_disk(
        str(saved)
    )
    for source in (folder, saved):
        labelled = read_data(DataConfig(dataset=str(source), **columns), seed=123)
        assert labelled.classes == from_files.classes
        for name, frame in _frames(labelled).items():
            assert frame.equals(_frames(from_files)[name]), (source, name)
        assert labelled.files["val"].endswith("split validation")
    # one split named: the table is cut as a file is
    sizes = {"train_size": 4, "val_size": 2, "test_size": "rest"}
    columns.pop("train_size")
    one = read_data(DataConfig(dataset=str(saved), dataset_split="test", **columns, **sizes), 1)
    assert sum(len(f) for _, f in one.splits.items()) == len(parts["test"])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dataset-split", "nope"], "'nope'"),
        (["--text-column", "message"], "no column 'message'"),
        (["--label-column", "label"], "name the right one with --label-column"),
        (
            ["--data-file", "x.csv"],
            "--dataset reads every split from the dataset; drop --data-file",
        ),
    ],
)
def test_bad_split_or_column_names_stop_with_one_line(flags, message, tmp_path, capsys):
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": _dataset(_rows(4, 0), class_label=False)}).save_to_disk(
        str(saved)
    )
    args = ["--dataset", str(saved), "--text-column", "body", "--label-column", "kind"]
    args += ["--model-dir", str(tmp_path / "no-model"), "--run-dir", str(tmp_path / "r"), *flags]
    capsys.readouterr()  # save_to_disk's progress bar
    if flags[0] == "--data-file":  # impossible flags: argparse's usage and "prog: error: ..."
        with pytest.raises(SystemExit):
            finetune.main(args)
        assert f"error: {message}" in capsys.readouterr().err.strip().splitlines()[-1]
    else:
        assert finetune.main(args) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("error: --dataset ") and message in line
    assert not (tmp_path / "r").exists()


def test_cells_are_checked_as_in_a_file(tmp_path, monkeypatch):
    from gpt2_jax.data.hf_datasets import read_dataset

    monkeypatch.setattr("gpt2_jax.data.hf_datasets.READ_ROWS", 1)  # rows counted across slices

    saved = tmp_path / "saved"
    rows = {"body": ["fine", "  ", "also fine"], "kind": ["a", "b", "a"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(saved))
    with pytest.raises(ValueError, match=r"split all row 2, column 'body': empty text"):
        read_dataset(str(saved), None, "body", "kind")
    rows = {"body": ["x", "y"], "kind": [1.0, 2.0]}  # float labels: 1.0 vs 1 would be two classes
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "floats"))
    with pytest.raises(ValueError, match=r"row 1, column 'kind': label 1.0 is a float"):
        read_dataset(str(tmp_path / "floats"), None, "body", "kind")


def test_without_the_datasets_library_one_line_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if it were not installed
    args = ["--dataset", "anything", "--model-dir", str(tmp_path), "--run-dir", str(tmp_path / "r")]
    assert finetune.main(args) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert (
        line
        == "error: reading --dataset needs the datasets library: pip install gpt2_jax[datasets]"
    )
