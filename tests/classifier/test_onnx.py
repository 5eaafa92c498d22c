"""experiments.export --to onnx: the graph run by onnxruntime gives Classifier's
probabilities and labels (temperature, threshold, truncated side, padding included)."""

import json
import shutil

import jax
import numpy as np
import pytest
from conftest import TINY_SETTINGS

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("torch", reason="the onnx extra is not installed")

from gpt2_jax.classifier.classifier import (  # noqa: E402
    PARAMS_DIR,
    Classifier,
    ClassifierConfig,
    save_classifier,
)
from gpt2_jax.classifier.export import ExportError  # noqa: E402
from gpt2_jax.classifier.onnx_export import ONNX_NOTE, OnnxClassifier, export_onnx  # noqa: E402
from gpt2_jax.commands import export as export_cli  # noqa: E402
from gpt2_jax.model.config import GPTConfig  # noqa: E402
from gpt2_jax.model.gpt import init_params  # noqa: E402

TEXTS = [
    "Ok lar... Joking wif u oni...",
    "x",
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005",
    " ".join(["call now to claim your free prize, reply STOP to end"] * 5),  # cut at 24
    "Sorry, I'll call later",
]


def _run(root, bpe_dir, labels, seed=3, **decisions):
    cfg = GPTConfig.from_settings(TINY_SETTINGS, num_classes=len(labels))
    params = jax.tree.map(np.asarray, init_params(cfg, seed=seed))
    rng = np.random.default_rng(seed)
    params["head"]["kernel"] = rng.normal(0, 0.5, params["head"]["kernel"].shape).astype(np.float32)
    params["head"]["bias"] = rng.normal(0, 1.0, len(labels)).astype(np.float32)
    spec = ClassifierConfig(model=cfg, labels=labels, pool="last-real", max_length=24, **decisions)
    save_classifier(root, params, spec, bpe_dir=bpe_dir)
    return root


@pytest.mark.parametrize("truncate", ["head", "tail"])
def test_onnx_probabilities_equal_the_classifiers(tmp_path, bpe_dir, truncate):
    run = _run(tmp_path / "run", bpe_dir, ("ham", "promo", "spam"), truncate=truncate)
    out = export_onnx(run, tmp_path / "onnx")
    ours = Classifier.load(run).predict(TEXTS)
    assert ours.truncated[3]
    onnx = OnnxClassifier.load(out)
    for batch_size in (1, 2, 16):  # alone, and padded beside longer texts
        np.testing.assert_allclose(
            onnx.predict_proba(TEXTS, batch_size), ours.probs, atol=1e-4, rtol=0
        )
    assert onnx.predict(TEXTS) == ours.labels
    assert json.loads((out / ONNX_NOTE).read_text())["probe_max_abs_difference"] <= 1e-4


def test_onnx_keeps_the_temperature_and_the_threshold(tmp_path, bpe_dir):
    run = _run(tmp_path / "run", bpe_dir, ("ham", "spam"), temperature=2.5, threshold=0.3)
    assert export_cli.main(["--run", str(run), "--to", "onnx", str(tmp_path / "onnx")]) == 0
    onnx = OnnxClassifier.load(tmp_path / "onnx")
    ours = Classifier.load(run).predict(TEXTS)
    np.testing.assert_allclose(onnx.predict_proba(TEXTS), ours.probs, atol=1e-4, rtol=0)
    assert onnx.predict(TEXTS) == ours.labels
    plain = Classifier.load(run).with_threshold(None).predict(TEXTS)
    assert plain.labels != ours.labels  # the threshold matters for these texts


def test_onnx_refusals_are_one_line(tmp_path, bpe_dir, capsys):
    run = _run(tmp_path / "run", bpe_dir, ("a", "b"))
    with pytest.raises(SystemExit):
        export_cli.main(["--model-dir", str(run), "--to", "onnx", str(tmp_path / "x")])
    assert "--to onnx exports a trained classifier: give --run DIR" in capsys.readouterr().err
    mean = tmp_path / "mean"
    cfg = GPTConfig.from_settings(TINY_SETTINGS, num_classes=2)
    spec = ClassifierConfig(model=cfg, labels=("a", "b"), pool="mean", max_length=24)
    save_classifier(mean, init_params(cfg, seed=1), spec, bpe_dir=bpe_dir)
    assert export_cli.main(["--run", str(mean), "--to", "onnx", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "mean" in err and len(err.splitlines()) == 1
    out = export_onnx(run, tmp_path / "onnx")
    (out / ONNX_NOTE).write_text('{"labels": ["a"], "max_length": 24, "truncate": "head"}')
    with pytest.raises(ExportError, match="not what export wrote"):
        OnnxClassifier.load(out)


def test_onnx_of_label_sets_gives_the_classifiers_sigmoids_and_sets(tmp_path, bpe_dir):
    labels, thresholds = ("sports", "politics", "money"), (0.3, 0.5, 0.7)
    run = _run(tmp_path / "run", bpe_dir, labels, multi_label=True, thresholds=thresholds)
    out = export_onnx(run, tmp_path / "onnx")
    ours = Classifier.load(run).predict(TEXTS)
    assert len(set(ours.labels)) > 1  # the sets differ between these texts
    onnx = OnnxClassifier.load(out)
    np.testing.assert_allclose(onnx.predict_proba(TEXTS, 2), ours.probs, atol=1e-4, rtol=0)
    assert onnx.predict(TEXTS) == ours.labels
    note = json.loads((out / ONNX_NOTE).read_text())
    assert note["multi_label"] is True and note["thresholds"] == list(thresholds)
    for bad in ({"thresholds": [0.5]}, {"thresholds": None}, {"threshold": 0.5}):
        (out / ONNX_NOTE).write_text(json.dumps({**note, **bad}))
        with pytest.raises(ExportError, match="threshold, thresholds or multi_label"):
            OnnxClassifier.load(out)
    (out / ONNX_NOTE).write_text(json.dumps({**note, "multi_label": False, "thresholds": None,
                                             "threshold": "0.5"}))  # fmt: skip
    with pytest.raises(ExportError, match="threshold, thresholds or multi_label"):
        OnnxClassifier.load(out)


def test_onnx_refuses_before_loading_the_weights(tmp_path, bpe_dir):
    cfg = GPTConfig.from_settings(TINY_SETTINGS, num_classes=2)
    spec = ClassifierConfig(model=cfg, labels=("a", "b"), pool="mean", max_length=24)
    save_classifier(tmp_path / "mean", init_params(cfg, seed=1), spec, bpe_dir=bpe_dir)
    shutil.rmtree(tmp_path / "mean" / PARAMS_DIR)  # loading the weights would fail
    with pytest.raises(ExportError, match="mean"):
        export_onnx(tmp_path / "mean", tmp_path / "onnx")
