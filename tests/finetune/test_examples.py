"""The served page offers a few of the run's own validation texts, per class."""

import json

import pandas as pd
import pytest
from synthetic import write_sms_file

from gpt2_jax.classifier.classifier import Classifier
from gpt2_jax.data.splits import Splits
from gpt2_jax.finetune.config import DataConfig, ModelConfig, OutputConfig, RunConfig
from gpt2_jax.finetune.examples import EXAMPLES_FILE, pick_examples, read_examples
from gpt2_jax.finetune.run import run
from gpt2_jax.training.config import TrainConfig


def _frame(rows):
    return pd.DataFrame(rows, columns=["text", "label"])


def test_examples_come_from_validation_per_class_short_first():
    val = _frame([("x" * 400, "a"), ("a1", "a"), ("b1", "b"), ("a2", "a"), ("a3", "a")])
    splits = Splits(_frame([("t", "a"), ("t", "b")]), val, _frame([]))
    assert pick_examples(splits, ("a", "b")) == ["a1", "a2", "b1"]
    assert pick_examples(splits, ("b", "a"), per_class=1) == ["b1", "a1"]
    no_val = Splits(_frame([("t", "a")]), _frame([]), _frame([("z", "b")]))
    assert pick_examples(no_val, ("a", "b")) == ["z"]  # from test when there is no validation


@pytest.mark.parametrize("content", ["{not json", '{"a": 1}', '["ok", 3]'])
def test_a_damaged_examples_file_is_not_trusted(tmp_path, content):
    (tmp_path / EXAMPLES_FILE).write_text(content)
    assert read_examples(tmp_path) is None
    assert read_examples(tmp_path / "missing") is None


@pytest.mark.slow
def test_a_run_keeps_its_examples_and_the_page_offers_them(tiny_model_dir, tmp_path):
    pytest.importorskip("starlette")
    from gpt2_jax.serve.app import page_examples, run_facts

    data = write_sms_file(tmp_path / "SMSSpamCollection", n_ham=72, n_spam=32)
    cfg = RunConfig(
        model=ModelConfig(model_dir=str(tiny_model_dir)),
        data=DataConfig(data_file=str(data), train_size=64, val_size=16, test_size=16),
        train=TrainConfig(epochs=1, lr=1e-3),
        output=OutputConfig(run_dir=str(tmp_path / "run")),
    )
    run(cfg, log=lambda s: None)
    saved = json.loads((tmp_path / "run" / EXAMPLES_FILE).read_text())
    texts = data.read_text().splitlines()
    assert len(saved) == 4  # two per class
    assert all(any(line.endswith("\t" + t) for line in texts) for t in saved)
    facts = run_facts(tmp_path / "run", Classifier.load(tmp_path / "run"))
    assert facts["examples"] == saved
    (tmp_path / "run" / EXAMPLES_FILE).unlink()  # a run saved before examples were kept
    assert page_examples(tmp_path / "run", ("ham", "spam"))  # the lab's SMS examples
    assert page_examples(tmp_path / "run", ("sport", "tech")) == []
