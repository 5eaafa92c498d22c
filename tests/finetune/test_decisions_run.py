"""--calibrate and --decision-threshold: fitted on validation after training, recorded,
saved with the classifier and applied wherever it predicts."""

import dataclasses
import json
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
from synthetic import write_sms_file

from gpt2_jax import Classifier
from gpt2_jax.finetune.config import DataConfig, ModelConfig, OutputConfig, RunConfig
from gpt2_jax.finetune.inputs import read_data
from gpt2_jax.finetune.run import run
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.training.decisions import softmax

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def decided(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("decided")
    data = write_sms_file(root / "SMSSpamCollection", 120, 60)
    cfg = RunConfig(
        model=ModelConfig(model_dir=str(tiny_model_dir), pool="last-real"),
        data=DataConfig(data_file=str(data), train_size=96, val_size=48, test_size=36),
        train=TrainConfig(epochs=3, lr=2e-3, calibrate=True, decision_threshold="recall=0.9"),
        output=OutputConfig(run_dir=str(root / "run")),
    )
    return cfg, run(cfg, log=lambda s: None)


def test_the_decisions_are_recorded_and_saved(decided):
    cfg, report = decided
    run_dir = cfg.output.run_dir
    calibration = report["decisions"]["calibration"]
    assert calibration["nll_after"] <= calibration["nll_before"]
    threshold = report["decisions"]["threshold"]
    assert threshold["target"] == "recall=0.9" and threshold["met"] == (threshold["recall"] >= 0.9)
    with open(f"{run_dir}/classifier.json") as f:
        meta = json.load(f)
    assert meta["format"] == 2
    assert meta["temperature"] == calibration["temperature"]
    assert meta["threshold"] == threshold["value"]
    assert open(f"{run_dir}/calibration.png", "rb").read(4) == b"\x89PNG"


def test_predictions_apply_the_temperature_and_the_threshold(decided):
    cfg, report = decided
    clf = Classifier.load(cfg.output.run_dir)
    plain = dataclasses.replace(clf.spec, temperature=1.0, threshold=None)
    val = read_data(cfg.data, cfg.train.seed).splits.val
    texts, truth = val["text"].tolist(), val["y"].to_numpy()
    pred = clf.predict(texts)
    raw = Classifier(plain, clf.params, clf.tokenizer).predict(texts).probs
    t = report["decisions"]["calibration"]["temperature"]
    np.testing.assert_allclose(pred.probs, softmax(np.log(raw), t), atol=1e-6)
    assert (pred.probs.argmax(1) == raw.argmax(1)).all()  # a temperature keeps the argmax
    threshold = report["decisions"]["threshold"]
    chosen = pred.probs[:, 1] >= threshold["value"]
    assert pred.labels == [clf.labels[int(c)] for c in chosen]
    # the recorded validation figures are those of these very predictions
    tp = int(np.sum(chosen & (truth == 1)))
    assert tp / int(np.sum(truth == 1)) == pytest.approx(threshold["recall"], abs=1e-9)
    assert tp / int(chosen.sum()) == pytest.approx(threshold["precision"], abs=1e-9)


def test_the_threshold_can_be_overridden_in_the_api_classify_and_the_server(
    decided, tmp_path, capsys
):
    cfg, report = decided
    clf = Classifier.load(cfg.output.run_dir)
    texts = read_data(cfg.data, cfg.train.seed).splits.val["text"].tolist()[:12]
    saved = clf.predict(texts)
    p = saved.probs[:, 1]
    t = float(np.median(p))  # splits these texts, unlike the saved threshold in general
    expected = {
        t: [clf.labels[int(x)] for x in p >= t],
        "argmax": [clf.labels[int(k)] for k in saved.probs.argmax(1)],
    }
    for override, labels in expected.items():
        pred = clf.with_threshold(None if override == "argmax" else override).predict(texts)
        np.testing.assert_array_equal(pred.probs, saved.probs)  # only the decision moves
        assert pred.labels == labels and clf.labels[1] in labels
        assert [clf.labels[k] for k in pred.class_ids] == labels
    assert clf.predict(texts).labels == saved.labels  # the original keeps the saved one
    with pytest.raises(ValueError, match="threshold"):
        clf.with_threshold(1.5)

    from gpt2_jax.commands import classify as classify_cli

    out = tmp_path / "pred.csv"
    base = ["--run", cfg.output.run_dir, "--output", str(out), *texts]
    assert classify_cli.main([*base, "--decision-threshold", str(t)]) == 0
    assert pd.read_csv(out)["label"].tolist() == expected[t]
    assert classify_cli.main([*base, "--decision-threshold", "argmax"]) == 0
    assert pd.read_csv(out)["label"].tolist() == expected["argmax"]
    with pytest.raises(SystemExit):
        classify_cli.main([*base, "--decision-threshold", "high"])
    assert "not a probability in [0, 1] or argmax" in capsys.readouterr().err


def test_the_server_takes_a_threshold_per_request(decided):
    cfg, _ = decided
    clf = Classifier.load(cfg.output.run_dir)
    texts = read_data(cfg.data, cfg.train.seed).splits.val["text"].tolist()[:12]
    saved = clf.predict(texts)
    t = float(np.median(saved.probs[:, 1]))
    expected = {
        t: [clf.labels[int(x)] for x in saved.probs[:, 1] >= t],
        "argmax": [clf.labels[int(k)] for k in saved.probs.argmax(1)],
    }
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    from gpt2_jax.serve.app import Limits, ServerThread, make_app, run_facts
    from gpt2_jax.serve.batcher import MicroBatcher

    batcher = MicroBatcher(lambda texts, rows: clf.predict(texts, batch_size=rows), max_batch=16)
    app = make_app(clf, run_facts(cfg.output.run_dir, clf), Limits(), batcher)
    with ServerThread(app) as url:
        for override, labels in expected.items():
            status, got = post(url, {"texts": texts, "threshold": override})
            assert status == 200 and [r["label"] for r in got["results"]] == labels
        status, got = post(url, {"texts": texts})
        assert status == 200 and [r["label"] for r in got["results"]] == saved.labels
        status, got = post(url, {"texts": texts, "threshold": None})
        assert status == 422 and "probability in [0, 1]" in got["error"], got


def post(url, body):
    """``(status, parsed JSON)`` of a JSON POST to ``url``/classify."""
    request = urllib.request.Request(
        url + "/classify", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
