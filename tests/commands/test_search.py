"""experiments.search: a small study writes its best config, table and plots; the best
config reruns to the same validation figure; later trials reuse the frozen prefix; a
search killed mid-trial goes on with the same study."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import REPO
from synthetic import write_sms_file

from gpt2_jax.commands import finetune, search
from gpt2_jax.commands.search_report import mark_pruned
from gpt2_jax.commands.search_space import parse_space
from gpt2_jax.commands.search_study import pruning_hook
from gpt2_jax.training.train import epoch_score

pytestmark = pytest.mark.slow

SPACE = ["--search", "lr=1e-4:1e-2:log", "--search", "class_weights=balanced,none"]


def _run_flags(model_dir, data):
    return [
        "--model-dir",
        str(model_dir),
        "--data-file",
        str(data),
        "--offline",
        "--train-size",
        "32",
        "--val-size",
        "16",
        "--test-size",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "8",
    ]


def _command(out, trials, model_dir, data):
    return [
        "--out",
        str(out),
        "--base",
        "spam",
        "--trials",
        str(trials),
        "--sampler-seed",
        "0",
        *SPACE,
        "--",
        *_run_flags(model_dir, data),
    ]


def _trials(out):
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{out / 'study.db'}")
    return study.get_trials(deepcopy=False)


@pytest.fixture(scope="module")
def searched(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    data = write_sms_file(root / "SMSSpamCollection", n_ham=60, n_spam=30)
    out = root / "out"
    assert search.main(_command(out, 3, tiny_model_dir, data)) == 0
    return out, data


def test_three_trials_write_best_config_table_plots_and_share_the_prefix(searched):
    out, _ = searched
    trials = _trials(out)
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for name in ("config.json", "trials.csv", "trials.md", "history.png", "importance.png"):
        assert (out / name).stat().st_size > 0, name
    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,state,value,lr,class_weights") and len(rows) == 4
    # one cached prefix per split, written by trial 0 and read back by trials 1 and 2
    assert len(list((out / "prefix-cache").glob("prefix-*.npy"))) == 3
    for t in trials[1:]:
        log = (out / "trials" / f"search-{t.number:03d}" / "run.log").read_text()
        assert log.count("reusing") == 3 and "saved to" not in log


def test_the_best_config_reruns_to_the_trials_validation_figure(searched, tmp_path):
    out, _ = searched
    best = max(_trials(out), key=lambda t: t.value)
    rerun = tmp_path / "rerun"
    assert finetune.main(["--config", str(out / "config.json"), "--run-dir", str(rerun)]) == 0
    record = json.loads((rerun / "metrics.json").read_text())
    kept = record["selected"]["epoch"]
    assert epoch_score(record["epochs"][kept - 1], "val_macro_f1") == best.value
    assert record["config"]["train"]["lr"] == best.params["lr"]


def test_a_search_killed_mid_trial_goes_on_with_the_same_study(searched, tiny_model_dir):
    out, data = searched
    cmd = [sys.executable, "-m", "experiments.search", *_command(out, 4, tiny_model_dir, data)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    started = out / "trials" / "search-003" / "metrics.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not started.is_file():
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    output = proc.communicate()[0]
    assert started.is_file(), output[-3000:]
    killed = _trials(out)[3]
    assert killed.state == optuna.trial.TrialState.RUNNING  # as the kill left it
    # the same command again: the killed trial is failed and its settings run once more
    assert search.main(_command(out, 4, tiny_model_dir, data)) == 0
    trials = _trials(out)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert trials[3].state == optuna.trial.TrialState.FAIL
    assert trials[4].state == optuna.trial.TrialState.COMPLETE
    assert trials[4].user_attrs["retry_of"] == 3 and trials[4].params == killed.params
    status = json.loads((out / "trials" / "search-003" / "metrics.json").read_text())["status"]
    assert status != "finished"
    assert "| 4 " in (out / "trials.md").read_text()


def test_the_space_from_flags_and_bad_specs():
    params = parse_space(["lr=1e-5:1e-3:log", "epochs=2:6", "class-weights=balanced,none"], None)
    assert [(p.name, p.kind) for p in params] == [
        ("lr", "float"),
        ("epochs", "int"),
        ("class_weights", "choice"),
    ]
    assert params[0].log and params[2].choices == ("balanced", "none")
    for bad, words in [
        (["learning=1:2"], "not a run setting"),
        (["epochs=1.5:3"], "whole number"),
        (["lr=0:1:log"], "LOW > 0"),
        (["pool=a:b"], "not a number"),
        (["lr"], "NAME=SPEC"),
        (["lr=1e-4:1e-3", "lr=1e-4,1e-3"], "more than once"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_space(bad, None)


def test_pruning_ends_a_trial_before_its_last_epoch_and_marks_its_folder(tmp_path):
    # any score is below the threshold 2.0: the pruner asks to stop at every epoch
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(2.0))
    epoch = {"epoch": 1, "val": {"macro_f1": 0.5}}
    with pytest.raises(optuna.TrialPruned, match="after epoch 1"):
        pruning_hook(study.ask(), "val_macro_f1", epochs=2)([epoch])
    last = study.ask()
    pruning_hook(last, "val_macro_f1", epochs=1)([epoch])  # its last epoch: it keeps it
    assert last.should_prune()
    run_dir = tmp_path / "trial"
    (run_dir / "checkpoints" / "1").mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"status": "running"}))
    mark_pruned(run_dir, "pruned after epoch 1")
    status = json.loads((run_dir / "metrics.json").read_text())["status"]
    assert status.startswith("stopped: pruned") and not (run_dir / "checkpoints").exists()
