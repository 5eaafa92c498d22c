"""The run compares its inputs with each other: label spellings that collide are refused,
texts that validation or test share with training are counted, and dropped on request."""

import csv
import dataclasses
import json

import pytest

from gpt2_jax.commands import finetune
from gpt2_jax.finetune.config import RunConfig
from gpt2_jax.finetune.inputs import read_data


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


def _dry_run(tiny_model_dir, data, run_dir, *extra) -> int:
    """``finetune`` with ``--epochs 0``: reads, checks and splits the data only."""
    args = ["--data-file", str(data), "--model-dir", str(tiny_model_dir), "--offline"]
    sizes = ["--train-size", "20", "--val-size", "10", "--test-size", "10"]
    return finetune.main([*args, *sizes, "--epochs", "0", "--run-dir", str(run_dir), *extra])


def test_label_spellings_that_collide_are_refused_unless_labels_names_them(
    tiny_model_dir, tmp_path, capsys
):
    rows = [(f"text number {i}", ["ham", "spam", "Ham "][i % 3]) for i in range(40)]
    data = _write(tmp_path / "mixed.csv", rows)
    assert _dry_run(tiny_model_dir, data, tmp_path / "refused") != 0
    said = capsys.readouterr()
    line = (said.err + said.out).strip().splitlines()[-1]
    assert "mixed.csv" in line and "'label'" in line and "'ham'" in line and "'Ham '" in line
    assert "--labels" in line
    assert _dry_run(tiny_model_dir, data, tmp_path / "named", "--labels", "ham,spam,Ham ") == 0
    record = json.loads((tmp_path / "named" / "metrics.json").read_text())
    assert record["data"]["classes"] == ["ham", "spam", "Ham "]


@pytest.mark.parametrize("drop", [False, True])
def test_texts_shared_between_splits_are_counted_and_dropped_on_request(
    tiny_model_dir, tmp_path, capsys, drop
):
    # 40 rows, 30 distinct texts: rows 30-39 repeat rows 0-9
    rows = [(f"text number {i % 30}", "ab"[i % 30 % 2]) for i in range(40)]
    data = _write(tmp_path / "repeats.csv", rows)
    run_dir = tmp_path / "run"
    assert _dry_run(tiny_model_dir, data, run_dir, *(["--drop-duplicates"] if drop else [])) == 0
    record = json.loads((run_dir / "metrics.json").read_text())
    info = record["data"]
    shared = info["duplicates"]
    assert set(shared) == {"train/val", "train/test", "val/test"}
    # recount on the splits the run cut (the same reading, without the drop)
    cfg = RunConfig.from_dict(record["config"])
    cut = read_data(dataclasses.replace(cfg.data, drop_duplicates=False), cfg.train.seed)
    train = set(cut.splits.train["text"])
    expect_val = int(cut.splits.val["text"].isin(train).sum())
    expect_test = int(cut.splits.test["text"].isin(train).sum())
    assert shared["train/val"]["rows"] == expect_val
    assert shared["train/test"]["rows"] == expect_test
    assert expect_val + expect_test > 0  # the data repeats enough to show it
    shown = capsys.readouterr().out
    assert "texts shared between splits" in shown
    if drop:
        assert info["duplicates_dropped"]["val"] == expect_val
        assert info["splits"]["val"]["n"] == 10 - expect_val
        assert "left out" in shown
    else:
        assert info["duplicates_dropped"] == {} and info["splits"]["val"]["n"] == 10
        assert "--drop-duplicates" in shown
