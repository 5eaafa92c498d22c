"""A run resumes only on the inputs it started with: each one that changed is named."""

import json
import shutil

import pytest
from synthetic import write_sms_file

from gpt2_jax.finetune.config import DataConfig, ModelConfig, OutputConfig, RunConfig
from gpt2_jax.finetune.fingerprints import changes, input_fingerprints
from gpt2_jax.finetune.run import run
from gpt2_jax.training.config import TrainConfig

pytestmark = pytest.mark.slow


def _interrupted_run(model_dir, data, test_file, run_dir):
    """A run with a test file of its own, stopped in epoch 2 (epoch 1 saved)."""
    cfg = RunConfig(
        model=ModelConfig(model_dir=str(model_dir)),
        data=DataConfig(data_file=str(data), train_size=64, val_size=16, test_file=str(test_file)),
        train=TrainConfig(epochs=2, lr=1e-3),
        output=OutputConfig(run_dir=str(run_dir)),
    )

    def stop(step):
        if step == 6:  # 4 steps per epoch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, log=lambda s: None, on_step=stop)
    return cfg


def test_a_changed_test_file_or_backbone_stops_the_resume_and_is_named(tiny_model_dir, tmp_path):
    data = write_sms_file(tmp_path / "SMSSpamCollection", 72, 32)
    (tmp_path / "test").mkdir()
    test_file = write_sms_file(tmp_path / "test" / "SMSSpamCollection", 12, 6)
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "model")
    run_dir = tmp_path / "run"
    cfg = _interrupted_run(model_dir, data, test_file, run_dir)
    recorded = json.loads((run_dir / "metrics.json").read_text())["fingerprints"]
    assert set(recorded["data"]) == {"train", "val", "test"}
    assert recorded["data"]["test"]["file"] == str(test_file)

    original = test_file.read_bytes()
    test_file.write_bytes(original.replace(b"ham\t", b"spam\t", 1))
    with pytest.raises(ValueError) as refused:
        run(cfg, log=lambda s: None, resume=True)
    said = str(refused.value)
    assert f"the test data file {test_file} has other contents" in said
    assert "train" not in said.split("--resume")[1].split(";")[0]  # only the test file named
    assert json.loads((run_dir / "metrics.json").read_text())["status"].startswith("stopped")

    test_file.write_bytes(original)
    weights = next(model_dir.glob("model.ckpt.data*"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError, match=f"backbone's file {weights} has other contents"):
        run(cfg, log=lambda s: None, resume=True)

    shutil.rmtree(model_dir)
    shutil.copytree(tiny_model_dir, model_dir)
    report = run(cfg, log=lambda s: None, resume=True)  # the same inputs again: it goes on
    assert report["status"] == "finished" and [e["epoch"] for e in report["epochs"]] == [1, 2]


def test_changes_names_files_and_the_config(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("text,label\nx,1\n")
    b.write_text("text,label\ny,0\n")
    before = input_fingerprints({"train": str(a), "test": str(b)}, None, {"lr": 1})
    assert changes(before, before) == []
    moved = input_fingerprints({"train": str(a), "test": str(a)}, None, {"lr": 2})
    said = changes(before, moved)
    assert said == [
        f"the test data is read from another file than {b}",
        "the config in metrics.json was edited",
    ]
