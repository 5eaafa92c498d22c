"""--calibrate and --decision-threshold: fitted on validation after training, recorded,
saved with the classifier and applied wherever it predicts."""

import dataclasses
import json

import numpy as np
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
