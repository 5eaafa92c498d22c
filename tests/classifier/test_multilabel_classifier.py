"""A classifier of several labels per text: saved as format 3 with its thresholds (older
files still load), predicting label sets, and exported to transformers as
``multi_label_classification`` with the same sigmoid probabilities."""

import json

import jax
import numpy as np
import pytest
from conftest import TINY_SETTINGS

from gpt2_jax.classifier.classifier import Classifier, ClassifierConfig, save_classifier
from gpt2_jax.classifier.export import export_classifier
from gpt2_jax.classifier.saved import read_spec
from gpt2_jax.data.chunks import Chunking
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import init_params

LABELS = ("sports", "politics", "money")
TEXTS = [
    "the match ended with a late goal",
    "parliament votes on the budget today",
    "the bank raised its rate again, and the minister resigned over it",
    "ok",
]


def _run(root, bpe_dir, thresholds=(0.3, 0.5, 0.7)):
    cfg = GPTConfig.from_settings(TINY_SETTINGS, num_classes=len(LABELS))
    params = jax.tree.map(np.asarray, init_params(cfg, seed=3))
    rng = np.random.default_rng(3)
    params["head"]["bias"] = np.array([0.8, -0.6, 0.2], np.float32)  # the fold must matter
    params["head"]["kernel"] = rng.normal(0, 0.3, params["head"]["kernel"].shape).astype(np.float32)
    spec = ClassifierConfig(
        model=cfg,
        labels=LABELS,
        pool="last-real",
        max_length=16,
        multi_label=True,
        thresholds=thresholds,
    )
    save_classifier(root, params, spec, bpe_dir=bpe_dir)
    return root


def test_saved_with_its_thresholds_and_predicting_sets(tmp_path, bpe_dir):
    run = _run(tmp_path / "run", bpe_dir)
    meta = json.loads((run / "classifier.json").read_text())
    assert meta["format"] == 3 and meta["problem_type"] == "multi_label_classification"
    assert read_spec(run).thresholds == (0.3, 0.5, 0.7)
    pred = Classifier.load(run).predict(TEXTS)
    logits_free = pred.probs  # sigmoids: independent, so the rows need not sum to 1
    assert not np.allclose(logits_free.sum(axis=1), 1.0)
    expected = [
        tuple(n for n, p, t in zip(LABELS, row, (0.3, 0.5, 0.7)) if p >= t) for row in pred.probs
    ]
    assert pred.labels == expected
    np.testing.assert_array_equal(pred.sets, pred.probs >= np.array([0.3, 0.5, 0.7]))


def test_a_single_label_file_still_loads_and_a_bad_threshold_list_is_named(tmp_path, bpe_dir):
    run = _run(tmp_path / "run", bpe_dir)
    meta = json.loads((run / "classifier.json").read_text())
    single = {k: v for k, v in meta.items() if k not in ("problem_type", "thresholds")}
    (run / "classifier.json").write_text(json.dumps({**single, "format": 1}))
    spec = read_spec(run)
    assert not spec.multi_label and spec.thresholds is None
    (run / "classifier.json").write_text(json.dumps({**meta, "thresholds": [0.5]}))
    with pytest.raises(
        ValueError, match=r"classifier\.json: .*one probability in \[0, 1\] per label"
    ):
        read_spec(run)


def test_export_equals_the_transformers_pipeline_with_sigmoid(tmp_path, bpe_dir):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    run = _run(tmp_path / "run", bpe_dir)
    out = export_classifier(run, tmp_path / "hf")
    ours = Classifier.load(run).predict(TEXTS)
    pipe = transformers.pipeline("text-classification", model=str(out), top_k=None, device="cpu")
    results = pipe(TEXTS, truncation=True, function_to_apply="sigmoid")
    theirs = np.array(
        [[{r["label"]: r["score"] for r in res}[n] for n in LABELS] for res in results]
    )
    np.testing.assert_allclose(theirs, ours.probs, atol=1e-4, rtol=0)
    model = transformers.GPT2ForSequenceClassification.from_pretrained(out)
    assert model.config.problem_type == "multi_label_classification"
    note = json.loads((out / "gpt2_jax_export.json").read_text())
    assert note["thresholds"] == {"sports": 0.3, "politics": 0.5, "money": 0.7}


def test_one_label_settings_and_chunking_are_refused_with_label_sets(tmp_path, bpe_dir):
    cfg = GPTConfig.from_settings(TINY_SETTINGS, num_classes=len(LABELS))
    base = dict(model=cfg, labels=LABELS, pool="last-real", max_length=16, multi_label=True)
    with pytest.raises(ValueError, match="temperature and a threshold are for one label"):
        ClassifierConfig(**base, temperature=2.0)  # no thresholds: 0.5 for each label
    chunks = Chunking(length=16, stride=8)
    with pytest.raises(ValueError, match="chunking .* cannot be used with multi_label"):
        ClassifierConfig(**base, chunking=chunks)
    ClassifierConfig(**{**base, "multi_label": False}, chunking=chunks)  # one label: fine
    classifier = Classifier.load(_run(tmp_path / "run", bpe_dir))
    for threshold in (0.4, None):
        with pytest.raises(ValueError, match="with_threshold is for one label per text"):
            classifier.with_threshold(threshold)
