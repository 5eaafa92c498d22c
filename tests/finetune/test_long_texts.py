"""``--long-texts chunk`` end to end: a run on texts longer than the chunks, its record,
the saved classifier used from Python and from ``classify``, and export refused."""

import csv
import json
import random

import pytest

from gpt2_jax import Classifier
from gpt2_jax.commands import classify, finetune

pytestmark = pytest.mark.slow

WORDS = {"sport": "match goal team score", "money": "bank price market fund"}


@pytest.fixture(scope="module")
def articles(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "news.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(40):
            label = "sport" if i % 2 else "money"
            words = WORDS[label].split() + ["the", "a", "of", "day"]
            w.writerow([" ".join(rng.choice(words) for _ in range(rng.randint(3, 60))), label])
    return path


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, articles, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "news"
    args = ["--data-file", str(articles), "--model-dir", str(tiny_model_dir), "--epochs", "1"]
    args += ["--train-size", "24", "--val-size", "8", "--test-size", "8", "--batch-size", "4"]
    args += ["--long-texts", "chunk", "--chunk-length", "16", "--stride", "8"]
    args += ["--max-chunks", "2", "--chunk-pool", "max", "--run-dir", str(run_dir)]
    assert finetune.main(args) == 0
    return run_dir


def test_the_record_counts_chunked_texts_and_chunks(run_dir):
    record = json.loads((run_dir / "metrics.json").read_text())
    data = record["data"]
    assert data["chunking"] == {"length": 16, "stride": 8, "pool": "max", "max_chunks": 2}
    train = data["splits"]["train"]
    assert train["n"] == 24 and 0 < train["chunked"] < 24
    assert train["n"] < train["chunks"] <= 2 * 24 and train["truncated"] > 0
    assert data["batches_per_epoch"] == 6  # documents, not chunks
    assert record["epochs"][0]["test"]["n"] == 8
    log = (run_dir / "run.log").read_text()
    assert f"{train['chunked']} of 24 texts longer than 16 tokens cut into" in log
    assert f"into {train['chunks']} chunks in all" in log


def test_the_classifier_chunks_as_training_did(run_dir, capsys):
    saved = json.loads((run_dir / "classifier.json").read_text())
    assert saved["format"] == 3 and saved["chunking"]["pool"] == "max"
    clf = Classifier.load(run_dir)
    long_text = " ".join(["match goal"] * 80)
    pred = clf.predict([long_text, "bank"])
    assert pred.truncated.tolist() == [True, False] and pred.probs.shape == (2, 2)
    assert classify.main(["--run", str(run_dir), long_text]) == 0
    assert pred.labels[0] in capsys.readouterr().out


def test_export_refuses_a_chunking_classifier_in_one_line(run_dir, tmp_path):
    from gpt2_jax.classifier.export import ExportError, export_classifier

    with pytest.raises(ExportError, match="transformers has no such model") as err:
        export_classifier(run_dir, tmp_path / "hf")
    assert "\n" not in str(err.value)


def test_chunking_flags_are_checked_before_anything_is_read(capsys):
    args = ["--data-file", "x.csv", "--long-texts", "chunk", "--chunk-length", "16"]
    with pytest.raises(SystemExit):
        finetune.main(args + ["--stride", "20"])
    assert "error: --stride 20 > --chunk-length 16 would skip" in capsys.readouterr().err


def test_classify_says_what_a_chunking_classifier_left_out(run_dir, capsys):
    """Chunks of 16 every 8, at most 2: 24 tokens are read. A text of 20 tokens is longer
    than max_length but whole; one of 30 loses its end."""
    texts = [" ".join(["goal"] * n) for n in (20, 30, 3)]
    assert classify.main(["--run", str(run_dir), *texts]) == 0
    err = capsys.readouterr().err
    assert "1 of 3 texts were longer than the 24 tokens that 2 chunks of 16" in err
    assert "first 2 chunks were read" in err and "truncated to" not in err
