"""Interruption and resume: epoch checkpoints, SIGKILL mid-epoch, non-finite losses."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO
from synthetic import write_sms_file
from training_helpers import CFG, train_with_checkpoints
from training_helpers import tiny_data as _data
from training_helpers import tiny_partition as _partition

from gpt2_jax.classifier.classifier import load_classifier
from gpt2_jax.commands import spam
from gpt2_jax.data.encoding import epoch_order
from gpt2_jax.finetune.config import DataConfig, ModelConfig, OutputConfig, RunConfig, SpeedConfig
from gpt2_jax.finetune.job import TrainingJob, TrainingPlan
from gpt2_jax.finetune.run import run
from gpt2_jax.model.gpt import GPTModel, init_params
from gpt2_jax.training.checkpoints import EpochCheckpoints
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.training.optim import freeze, make_optimizer
from gpt2_jax.training.train import NonFiniteError, Trainer

SIZES = dict(train_size=160, val_size=40, test_size=40)  # 10 steps per epoch at batch 16


def _fit(data, tmp_path, resume=False, epochs=2, seed=3):
    tc = TrainConfig(batch_size=8, epochs=epochs, lr=1e-3)
    params = init_params(CFG, seed)
    weights = np.array([1.0, 2.0], np.float32)
    plan = TrainingPlan(data, ("ham", "spam"), tc, SpeedConfig(), "last", weights)
    job = TrainingJob(plan, GPTModel(CFG), _partition(params))
    return train_with_checkpoints(job, params, tmp_path / "ckpt", keep=2, resume=resume)


def _config(model_dir, data_file, run_dir, epochs=3):
    return RunConfig(
        model=ModelConfig(model_dir=str(model_dir)),
        data=DataConfig(data_file=str(data_file), **SIZES),
        train=TrainConfig(epochs=epochs, lr=1e-3),
        output=OutputConfig(run_dir=str(run_dir)),
    )


def test_non_finite_loss_stops_at_its_step_and_keeps_the_last_good_epoch(tmp_path):
    data = {"train": _data(0, 44), "test": _data(1, 8)}
    # A token id past the vocabulary makes the embedding lookup NaN. Put it in a message
    # that epoch 1 drops (44 = 5 batches of 8 + 4 left over) and epoch 2 trains on.
    dropped_1 = set(range(44)) - set(np.concatenate(epoch_order(44, 8, 123, 1)).tolist())
    batches_2 = epoch_order(44, 8, 123, 2)
    bad, batch = next(
        (i, b) for i in sorted(dropped_1) for b, idx in enumerate(batches_2) if i in idx
    )
    data["train"].ids[bad, 0] = CFG.vocab_size + 5
    with pytest.raises(NonFiniteError) as err:
        _fit(data, tmp_path)
    assert (err.value.step, err.value.epoch) == (5 + batch, 2)
    assert f"not finite at step {5 + batch} (epoch 2)" in str(err.value)
    checkpoints = EpochCheckpoints(tmp_path / "ckpt")
    assert checkpoints.latest_epoch() == 1
    params = init_params(CFG)
    part = _partition(params)
    tx = freeze(make_optimizer(1e-3, 0.1), part.labels)
    trainer = Trainer(GPTModel(CFG), tx, np.ones(2), pool="last", seed=0)
    restored = checkpoints.restore(1, trainer.init(part.trainable(params), part.frozen(params)))
    trainable = restored.state.trainable
    assert sorted(trainable) == ["h1", "head", "ln_f"]  # frozen leaves are not saved
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(trainable))
    assert int(restored.state.step) == 5


def test_resume_refuses_other_training_data(tmp_path):
    _fit({"train": _data(0, 32)}, tmp_path, epochs=1)
    with pytest.raises(ValueError, match="saved for other training data"):
        _fit({"train": _data(9, 32)}, tmp_path, resume=True)
    with pytest.raises(ValueError, match="saved for other frozen weights"):
        _fit({"train": _data(0, 32)}, tmp_path, resume=True, seed=4)


def test_resume_in_process_equals_one_go(tmp_path):
    data = {"train": _data(0, 32), "test": _data(1, 8)}
    whole_params, whole = _fit(data, tmp_path / "a", epochs=3)
    _fit(data, tmp_path / "b", epochs=1)
    resumed_params, resumed = _fit(data, tmp_path / "b", epochs=3, resume=True)
    assert _strip_times(resumed) == _strip_times(whole)
    for x, y in zip(jax.tree.leaves(resumed_params), jax.tree.leaves(whole_params)):
        np.testing.assert_array_equal(x, y)
    assert sorted(p.name for p in (tmp_path / "b" / "ckpt").iterdir()) == ["2", "3"]  # keep=2


def _strip_times(history):
    """Every epoch's record but its timings, as JSON text (so that NaN equals NaN)."""
    return json.dumps([{k: v for k, v in e.items() if not k.endswith("seconds")} for e in history])


# ---- the whole command, killed with SIGKILL in the middle of epoch 2 ----

KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from gpt2_jax.finetune.run import run
from gpt2_jax.finetune.config import RunConfig

def die(step):
    if step == 15:  # 10 steps per epoch: half-way through epoch 2
        os.kill(os.getpid(), signal.SIGKILL)

run(RunConfig.from_dict({config!r}), on_step=die)
"""


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    sms_file = write_sms_file(tmp_path / "SMSSpamCollection")
    whole_dir, killed_dir = tmp_path / "whole", tmp_path / "killed"
    whole = run(_config(tiny_model_dir, sms_file, whole_dir), log=lambda s: None)

    env = dict(os.environ, PYTHONPATH=str(REPO))
    script = KILLED_RUN.format(
        tests=str(REPO / "tests"), config=_config(tiny_model_dir, sms_file, killed_dir).to_dict()
    )
    killed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    report = json.loads((killed_dir / "metrics.json").read_text())
    assert report["status"] == "running" and len(report["epochs"]) == 1
    assert sorted(p.name for p in (killed_dir / "checkpoints").iterdir()) == ["1"]

    resumed = subprocess.run(
        [sys.executable, "-m", "experiments.spam", "--resume", str(killed_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch 1 (step 10)" in resumed.stdout
    report = json.loads((killed_dir / "metrics.json").read_text())
    assert report["status"] == "finished" and report["resumed"][0]["after_epoch"] == 1
    assert _strip_times(report["epochs"]) == _strip_times(whole["epochs"])
    _, p_whole, _ = load_classifier(whole_dir)
    _, p_resumed, _ = load_classifier(killed_dir)
    for x, y in zip(jax.tree.leaves(p_resumed), jax.tree.leaves(p_whole)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bit-identical

    finished_again = spam.main(["--resume", str(killed_dir)])
    assert finished_again != 0


def test_resume_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        spam.main(["--resume", str(tmp_path), "--lr", "0.1"])
    assert "drop --lr" in capsys.readouterr().err
    assert spam.main(["--resume", str(tmp_path / "nothing")]) == 1
    assert "metrics.json not found" in capsys.readouterr().err


@pytest.mark.slow
def test_interrupt_records_where_to_resume(tiny_model_dir, tmp_path):
    sms_file = write_sms_file(tmp_path / "SMSSpamCollection")
    run_dir = tmp_path / "run"
    cfg = _config(tiny_model_dir, sms_file, run_dir)

    def ctrl_c_at(when):
        def hook(step):
            if step == when:
                raise KeyboardInterrupt

        return hook

    def status():
        return json.loads((run_dir / "metrics.json").read_text())

    with pytest.raises(KeyboardInterrupt):  # during epoch 1: nothing to resume from yet
        run(cfg, log=lambda s: None, on_step=ctrl_c_at(3))
    assert status()["status"].endswith("no epoch had finished, so no training state was saved")
    with pytest.raises(KeyboardInterrupt):  # resumed from scratch, stopped in epoch 2
        run(cfg, log=lambda s: None, resume=True, on_step=ctrl_c_at(12))
    report = status()
    assert report["status"].startswith("stopped: interrupted; the last good state (epoch 1)")
    assert f"--resume {run_dir}" in report["status"] and len(report["epochs"]) == 1
    report = run(cfg, log=lambda s: None, resume=True)
    assert report["status"] == "finished" and [e["epoch"] for e in report["epochs"]] == [1, 2, 3]
    assert [r["after_epoch"] for r in report["resumed"]] == [0, 1]
