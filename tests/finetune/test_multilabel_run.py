"""Several labels per text end to end: a JSON Lines file with list labels through
``experiments.finetune``; the metrics, the thresholds saved with the classifier, the
classifier from Python and ``classify``; settings that do not fit refused in one line."""

import json
import random

import numpy as np
import pytest

from gpt2_jax import Classifier
from gpt2_jax.classifier.saved import read_spec
from gpt2_jax.commands import classify, finetune
from gpt2_jax.training.multilabel import choose_thresholds

pytestmark = pytest.mark.slow

CUES = {"sports": "the match and the goal", "politics": "the vote", "money": "the bank rate"}


@pytest.fixture(scope="module")
def news(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "news.jsonl"
    with open(path, "w") as f:
        for _ in range(64):
            labels = [k for k in CUES if rng.random() < 0.4]
            text = " then ".join(CUES[k] for k in labels) or "a quiet day"
            f.write(json.dumps({"text": f"{text} {rng.randint(1, 99)}", "tags": labels}) + "\n")
    return path


def _args(news, model_dir, run_dir, *more):
    return [
        "--data-file", str(news), "--label-column", "tags", "--multi-label",
        "--model-dir", str(model_dir), "--train-size", "32", "--val-size", "16",
        "--test-size", "16", "--batch-size", "8", "--lr", "1e-3",
        "--run-dir", str(run_dir), *more,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(news, tiny_model_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "news"
    more = ("--epochs", "2", "--select-by", "val_micro_f1")
    assert finetune.main(_args(news, tiny_model_dir, run_dir, *more)) == 0
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def test_every_epoch_scores_the_label_sets(trained):
    run_dir, record = trained
    assert record["data"]["classes"] == ["money", "politics", "sports"]
    assert record["data"]["multi_label"] is True
    for epoch in record["epochs"]:
        for split in ("train", "val", "test"):
            m = epoch[split]
            assert set(m["per_class"]) == {"money", "politics", "sports"}
            for key in ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"):
                assert 0 <= m[key] <= 1
    assert record["selected"]["by"] == "val_micro_f1"
    assert (run_dir / "micro_f1.png").is_file() and (run_dir / "f1.png").is_file()


def test_thresholds_chosen_on_validation_are_saved_and_used(trained):
    run_dir, record = trained
    spec = read_spec(run_dir)
    assert spec.multi_label and json.loads((run_dir / "classifier.json").read_text())["format"] == 3
    clf = Classifier.load(run_dir)
    decided = record["decisions"]
    assert list(decided["thresholds"].values()) == list(spec.thresholds)
    # the same choice from the saved classifier's own validation probabilities
    texts, sets = _split_rows(run_dir, record, "val")
    probs = clf.predict_proba(texts)
    chosen, _ = choose_thresholds(probs, sets)
    np.testing.assert_allclose(chosen, spec.thresholds, atol=1e-5)
    pred = clf.predict(texts)
    assert pred.labels == [
        tuple(n for n, p, t in zip(clf.labels, row, spec.thresholds) if p >= t)
        for row in pred.probs
    ]


def _split_rows(run_dir, record, split):
    """A split's texts and [N, K] label sets, cut again from the data file as the run did."""
    from gpt2_jax.finetune.config import RunConfig
    from gpt2_jax.finetune.inputs import read_data

    cfg = RunConfig.from_dict(record["config"])
    labelled = read_data(cfg.data, cfg.train.seed)
    frame = dict(labelled.splits.items())[split]
    sets = np.array([[n in s for n in labelled.classes] for s in frame["labels"]])
    return frame["text"].tolist(), sets


def test_classify_writes_each_set_and_every_probability(trained, tmp_path, capsys):
    run_dir, _ = trained
    texts = ["the vote then the bank rate 4", "a quiet day 7"]
    pred = Classifier.load(run_dir).predict(texts)
    out = tmp_path / "pred.jsonl"
    assert classify.main(["--run", str(run_dir), *texts, "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [tuple(r["labels"]) for r in rows] == pred.labels
    for row, probs in zip(rows, pred.probs):
        assert [row[f"p_{n}"] for n in ("money", "politics", "sports")] == pytest.approx(probs)
    capsys.readouterr()
    assert classify.main(["--run", str(run_dir), "--decision-threshold", "0.5", *texts]) == 1
    err = capsys.readouterr().err.strip()
    assert "--decision-threshold is for one label per text" in err and "\n" not in err


@pytest.mark.parametrize(
    "more, said",
    [
        (("--calibrate",), "--calibrate is for one label per text"),
        (("--balance",), "--balance undersamples classes"),
        (("--thresholds", "f1", "--val-size", "0"), "--thresholds f1 chooses"),
    ],
)
def test_settings_that_do_not_fit_label_sets_are_one_line(
    news, tiny_model_dir, tmp_path, capsys, more, said
):
    args = _args(news, tiny_model_dir, tmp_path / "run", "--epochs", "1", *more)
    assert finetune.main(args) == 1
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1


def test_chunking_label_sets_is_refused_before_any_work(news, tiny_model_dir, tmp_path, capsys):
    args = _args(news, tiny_model_dir, tmp_path / "run", "--long-texts", "chunk")
    with pytest.raises(SystemExit) as exit_:
        finetune.main(args)
    assert exit_.value.code == 2
    assert "--long-texts chunk is for one label per text" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
