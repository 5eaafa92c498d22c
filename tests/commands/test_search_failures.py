"""experiments.search when a trial goes wrong: a diverging trial fails alone and the
search goes on; only settings that do not fit the inputs count as impossible, other
ValueErrors (a damaged cache) end the search. The run itself is replaced by a fake."""

import argparse

import optuna
import pytest

import gpt2_jax.finetune.inputs as inputs_module
import gpt2_jax.finetune.run as run_module
from gpt2_jax.commands import search
from gpt2_jax.commands.search_space import parse_space
from gpt2_jax.commands.search_study import Search, open_study
from gpt2_jax.finetune.config import RunConfig
from gpt2_jax.finetune.inputs import read_inputs
from gpt2_jax.training.train import NonFiniteError

FAIL, COMPLETE = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE


def _search(out, trials: int) -> Search:
    args = argparse.Namespace(
        storage=None,
        study_name="search",
        pruner="none",
        prune_after=0,
        startup_trials=10,
        sampler_seed=0,
        verbose=False,
        trials=trials,
    )
    space = parse_space(["lr=1e-5:1e-1:log"], None)
    found = Search(out, RunConfig(), space, args, "val_macro_f1")
    found.report = lambda: None  # the table and plots are tested in test_search.py
    return found


def _fake_run(failures: list):
    """A run that raises the next of ``failures`` (a callable) until none is left, then
    returns a one-epoch record."""

    def run(cfg, log=None, *, on_epoch=None, **_):
        if failures:
            failures.pop(0)(cfg)
        return {"selected": {"epoch": 1}, "epochs": [{"epoch": 1, "val": {"macro_f1": 0.5}}]}

    return run


def _diverge(cfg):
    raise NonFiniteError(7, 1)


def _bad_inputs(cfg):
    read_inputs(cfg)  # its data step is patched to raise, as for settings the data refuses


def _damaged_cache(cfg):
    raise ValueError("prefix cache prefix-train.npy: cannot reshape array")


def test_a_diverging_trial_fails_and_the_search_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_module, "run", _fake_run([_diverge]))
    found = _search(tmp_path, trials=2)
    found.optimize()
    trials = found.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [FAIL, COMPLETE, COMPLETE]
    assert trials[0].user_attrs["note"] == "loss not finite at step 7 (epoch 1)"
    assert "-> fail (loss not finite at step 7 (epoch 1))" in capsys.readouterr().out


def test_only_settings_the_inputs_refuse_are_impossible(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise ValueError("--batch-size 64 is more than the 32 training texts")

    monkeypatch.setattr(inputs_module, "read_data", refuse)
    monkeypatch.setattr(run_module, "run", _fake_run([_bad_inputs, _damaged_cache]))
    found = _search(tmp_path, trials=3)
    with pytest.raises(ValueError, match="prefix cache"):
        found.optimize()
    trials = found.study.get_trials(deepcopy=False)
    assert trials[0].state == FAIL and trials[0].user_attrs["note"].startswith("--batch-size")
    assert trials[1].state != COMPLETE  # the damaged cache ended the search there


def test_metric_takes_the_multi_label_scores(tmp_path):
    for metric in ("val_micro_f1", "val_subset_accuracy", "val_hamming_loss"):
        assert search.parser().parse_args(["--metric", metric]).metric == metric
    args = argparse.Namespace(
        storage=None,
        study_name="h",
        pruner="none",
        prune_after=0,
        startup_trials=1,
        sampler_seed=0,
    )
    study = open_study(args, tmp_path, "val_hamming_loss")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
