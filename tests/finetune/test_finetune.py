"""The main job end to end on a tiny checkpoint and a small synthetic spam/ham file."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, SMS_FILE, needs
from synthetic import write_sms_file

from gpt2_jax.classifier.classifier import Classifier
from gpt2_jax.commands import spam
from gpt2_jax.data.sms import read_sms_spam
from gpt2_jax.data.splits import add_class_ids, split
from gpt2_jax.finetune.config import DataConfig, ModelConfig, OutputConfig, RunConfig
from gpt2_jax.finetune.run import run
from gpt2_jax.training.config import TrainConfig

pytestmark = pytest.mark.slow
SIZES = dict(train_size=160, val_size=40, test_size=40)


@pytest.fixture(scope="module")
def sms_file(tmp_path_factory):
    return write_sms_file(tmp_path_factory.mktemp("data") / "SMSSpamCollection")


def _config(model_dir, sms_file, run_dir, weights="pretrained", **train):
    return RunConfig(
        model=ModelConfig(model_dir=str(model_dir), weights=weights),
        data=DataConfig(data_file=str(sms_file), **SIZES),
        train=TrainConfig(**{"epochs": 3, "lr": 1e-3, **train}),
        output=OutputConfig(run_dir=str(run_dir)),
    )


@pytest.fixture(scope="module")
def two_runs(tiny_model_dir, sms_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    reports = [
        run(_config(tiny_model_dir, sms_file, root / f"run{i}"), log=lambda s: None)
        for i in range(2)
    ]
    return root, reports


def _strip_times(report):
    """Every epoch's record but its timings, as JSON text (so that NaN equals NaN)."""
    return json.dumps(
        [{k: v for k, v in e.items() if not k.endswith("seconds")} for e in report["epochs"]]
    )


def test_learns(two_runs):
    _, (report, _) = two_runs
    first, last = report["epochs"][0], report["epochs"][-1]
    splits = report["data"]["splits"]
    majority = {name: max(s["ham"], s["spam"]) / s["n"] for name, s in splits.items()}
    assert last["train_step_loss"] < first["train_step_loss"]
    assert last["train"]["loss"] < first["train"]["loss"]
    assert last["test"]["accuracy"] > majority["test"]
    assert last["train"]["accuracy"] > majority["train"]
    assert report["data"]["batches_per_epoch"] == 10
    assert report["parameters"]["trainable"] < report["parameters"]["frozen"]


def test_same_seed_same_metrics(two_runs):
    _, (a, b) = two_runs
    assert _strip_times(a) == _strip_times(b)


def test_run_folder_contents(two_runs):
    root, (report, _) = two_runs
    run_dir = root / "run0"
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["status"] == "finished" and len(on_disk["epochs"]) == 3
    assert on_disk["config"]["train"]["seed"] == 123
    for key in (
        "loss",
        "accuracy",
        "ham_accuracy",
        "spam_accuracy",
        "spam_precision",
        "spam_recall",
        "spam_f1",
        "confusion",
    ):
        assert key in on_disk["epochs"][-1]["val"]
    for png in ("loss.png", "accuracy.png", "spam_recall.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["2", "3"]  # keep 2
    assert 0.1 < on_disk["peak_memory_gib"] < 64


def test_saved_classifier_gives_the_reported_predictions(two_runs, sms_file):
    root, (report, _) = two_runs
    classifier = Classifier.load(root / "run0")
    assert classifier.labels == ("ham", "spam")
    test_df = split(add_class_ids(read_sms_spam(sms_file), ("ham", "spam")), seed=123, **SIZES).test
    probs = classifier.predict(test_df["text"].tolist()).probs
    preds = probs.argmax(1)
    labels = test_df["y"].to_numpy()
    confusion = [[int(((labels == t) & (preds == p)).sum()) for p in (0, 1)] for t in (0, 1)]
    assert confusion == report["epochs"][-1]["test"]["confusion"]
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)


def test_classify_cli(two_runs):
    root, _ = two_runs
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.classify",
            "--run",
            str(root / "run0"),
            "WIN a FREE prize now, call 0800 12",
            "see you at home around 5",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.strip().splitlines()
    assert header.split("\t")[:3] == ["label", "p(ham)", "p(spam)"]
    assert [r.split("\t")[0] for r in rows] == ["spam", "ham"]
    assert 0.5 <= float(rows[0].split("\t")[2]) <= 1.0


def test_run_folder_is_not_overwritten(two_runs, tiny_model_dir, sms_file):
    root, _ = two_runs
    before = (root / "run0" / "metrics.json").read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        run(_config(tiny_model_dir, sms_file, root / "run0"), log=lambda s: None)
    assert (root / "run0" / "metrics.json").read_bytes() == before


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch-size", "0"], "batch_size must be positive"),
        (["--lr", "-1"], "lr must be a positive number"),
        (["--train-size", "8"], "train_size 8 < batch_size 16"),
        (["--model-size", "2B"], "invalid choice"),
        (["--class-weights", "1,2,3"], "NAME=POSITIVE_NUMBER"),
        (["--max-length", "0"], "max_length must be positive"),
        (["--trainable", "h1/("], "is neither a preset"),
    ],
)
def test_cli_rejects_impossible_flags(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        spam.main(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_explains():
    text = spam.parser().format_help()
    for flag in ("--train-size", "--lr", "--weights", "--offline", "--trainable", "--pool"):
        assert flag in text


def test_random_weights_train_everything(tiny_model_dir, sms_file, tmp_path):
    cfg = _config(tiny_model_dir, sms_file, tmp_path / "r", weights="random", epochs=1)
    lines = []
    report = run(cfg, log=lines.append)
    assert report["parameters"]["frozen"] == 0
    assert report["trainable_patterns"] == [".*"]
    assert not any("loading GPT-2" in line for line in lines)  # the checkpoint is not read


@needs(SMS_FILE)
def test_lab_states_its_facts(tiny_model_dir, tmp_path, capsys):
    """`python -m experiments.spam` on the real file (no epoch trained, tiny model)."""
    code = spam.main(
        [
            "--offline",
            "--data-file",
            str(SMS_FILE),
            "--model-dir",
            str(tiny_model_dir),
            "--epochs",
            "0",
            "--run-dir",
            str(tmp_path / "r"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "train:  2000 texts (1726 ham / 274 spam)" in out
    assert "batch 16 -> 125 batches per epoch" in out
    assert "classes (id order) ['ham', 'spam']" in out
    assert (
        "quoting joined 1 message(s) over several lines: SMSSpamCollection line 5082 "
        "(3 lines)" in out
    )
    report = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert report["config"]["data"]["data_format"] == "sms"
    assert report["status"].startswith("checked: --epochs 0")  # a data check, not a result
    assert not (tmp_path / "r" / "classifier.json").exists()
    train = report["data"]["splits"]["train"]
    assert (train["n"], train["ham"], train["spam"]) == (2000, 1726, 274)
    assert train["truncated"] > 0  # the tiny model's context is 64 tokens
