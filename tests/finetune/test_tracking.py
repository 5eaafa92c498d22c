"""--log-to tensorboard,mlflow: what each library's own reader finds is metrics.json's."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from synthetic import write_sms_file

from gpt2_jax.finetune import cli
from gpt2_jax.finetune.config import DataConfig, ModelConfig, OutputConfig, RunConfig
from gpt2_jax.finetune.run import run
from gpt2_jax.finetune.tracking import MLflow, _read_run_file
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.training.optim import step_learning_rates

pytestmark = pytest.mark.slow
LR, WARMUP = 1e-3, 3


@pytest.fixture(scope="module")
def tracked(tiny_model_dir, tmp_path_factory):
    """One tiny run (2 epochs of 5 steps) logged to both, with the default MLflow store."""
    sms = write_sms_file(tmp_path_factory.mktemp("data") / "SMSSpamCollection")
    root = tmp_path_factory.mktemp("runs")
    cfg = RunConfig(
        model=ModelConfig(model_dir=str(tiny_model_dir)),
        data=DataConfig(data_file=str(sms), train_size=40, val_size=16, test_size=16),
        train=TrainConfig(epochs=2, lr=LR, warmup_steps=WARMUP),
        output=OutputConfig(run_dir=str(root / "run"), log_to=("tensorboard,mlflow",)),
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        report = run(cfg, log=lambda s: None)
    return root, json.loads((root / "run" / "metrics.json").read_text()), report


def _epoch_figures(record: dict) -> dict[str, float]:
    """Every number of one epoch's record in metrics.json, by its path."""
    out = {}

    def walk(value, path):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*path, str(i)))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out["/".join(path)] = float(value)

    walk({k: v for k, v in record.items() if k != "epoch"}, ())
    return out


def _expected_rates(steps: int) -> np.ndarray:
    return np.array([LR * min(s, WARMUP) / WARMUP for s in range(steps)])


def test_tensorboard_events(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from tensorboard.util.tensor_util import make_ndarray

    root, metrics, _ = tracked
    events = EventAccumulator(str(root / "run" / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()

    def series(tag):
        return {e.step: float(make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}

    for record in metrics["epochs"]:
        figures = _epoch_figures(record)
        assert {"val/loss", "test/per_class/spam/f1", "train_step_loss"} <= set(figures)
        for tag, value in figures.items():
            got = series(tag)[record["epoch"]]
            assert got == np.float32(value) or (math.isnan(got) and math.isnan(value)), tag
    steps = metrics["epochs"][-1]["step"]
    losses = series("batch/loss")
    assert sorted(losses) == list(range(1, steps + 1))
    for record in metrics["epochs"]:  # the epoch's figure is the mean of its steps' losses
        per_epoch = metrics["data"]["batches_per_epoch"]
        mine = [losses[s] for s in range(record["step"] - per_epoch + 1, record["step"] + 1)]
        assert np.mean(mine) == pytest.approx(record["train_step_loss"], rel=1e-5)
    rates = series("batch/learning_rate")
    np.testing.assert_allclose([rates[s] for s in sorted(rates)], _expected_rates(steps), 1e-6)
    norms = list(series("batch/grad_norm").values())
    assert len(norms) == steps and all(n > 0 and math.isfinite(n) for n in norms)
    (content,) = events.PluginTagToContent("hparams").values()
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["train.lr"].number_value == LR
    assert hparams["output.log_to"].string_value == '["tensorboard", "mlflow"]'


def test_mlflow_run(tracked):
    from mlflow.tracking import MlflowClient

    root, metrics, report = tracked
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    run_id = json.loads((root / "run" / "mlflow_run.json").read_text())["run_id"]
    found = client.get_run(run_id)
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    params = found.data.params
    for group, fields in report["config"].items():  # the whole config, flattened
        for name in fields:
            assert f"{group}.{name}" in params
    assert float(params["train.lr"]) == LR and params["model.pool"] == "last"
    for record in metrics["epochs"]:
        for key, value in _epoch_figures(record).items():
            (got,) = [m.value for m in client.get_metric_history(run_id, key)
                      if m.step == record["epoch"]]  # fmt: skip
            assert got == value or (math.isnan(got) and math.isnan(value)), key
    steps = metrics["epochs"][-1]["step"]
    history = client.get_metric_history(run_id, "batch/loss")
    assert sorted(m.step for m in history) == list(range(1, steps + 1))
    rates = sorted(
        (m.step, m.value) for m in client.get_metric_history(run_id, "batch/learning_rate")
    )
    np.testing.assert_allclose([v for _, v in rates], _expected_rates(steps), 1e-6)
    assert len(client.get_metric_history(run_id, "batch/grad_norm")) == steps
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.json", "classifier.json", "loss.png", "accuracy.png"} <= names
    assert (root / "mlartifacts").is_dir()


def test_log_to_flag():
    assert OutputConfig(log_to=("tensorboard,mlflow", "mlflow")).log_to == ("tensorboard", "mlflow")
    with pytest.raises(ValueError, match="--log-to wandb: unknown tracker"):
        OutputConfig(log_to=("wandb",))
    with pytest.raises(ValueError, match="give --log-to mlflow too"):
        OutputConfig(log_to=("tensorboard",), mlflow_uri="sqlite:///x.db")
    args = cli.parser("x", "", "", RunConfig()).parse_args(["--log-to", "mlflow"])
    assert cli.config_from_args(args, RunConfig()).output.log_to == ("mlflow",)


def test_missing_library_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    argv = [
        "--log-to",
        "mlflow",
        "--data-file",
        str(tmp_path / "x.csv"),
        "--runs-root",
        str(tmp_path),
    ]
    code = cli.main(argv, prog="x", description="", epilog="", defaults=RunConfig())
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err == "error: --log-to mlflow needs the mlflow package: pip install gpt2_jax[track]"
    assert not list(tmp_path.iterdir())  # stopped before any run folder was made


def test_trackers_imported_only_when_asked():
    code = (
        "import sys, gpt2_jax.finetune.run, gpt2_jax.finetune.cli, gpt2_jax.finetune.tracking\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'tensorboard'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_learning_rate_of_each_step_with_accumulation():
    tc = TrainConfig(epochs=1, batch_size=2, lr=LR, warmup_steps=2, accumulation_steps=2)
    rates = step_learning_rates(tc, 16, np.arange(1, 9))  # 8 batches, 4 updates
    # update u (u = 0..3) takes batches 2u+1 and 2u+2; warm-up: 0, lr/2, then lr
    np.testing.assert_allclose(rates, [0, 0, LR / 2, LR / 2, LR, LR, LR, LR], atol=1e-12)


def test_resume_carries_on_with_the_mlflow_run(tracked, monkeypatch):
    """A resumed run logs to the MLflow run its folder names (this test runs last: it
    reopens the finished run of the fixture)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root, _, _ = tracked
    before = json.loads((root / "run" / "mlflow_run.json").read_text())["run_id"]
    again = MLflow(None, root / "run", {}, resume=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    assert again.run_id == before and client.get_run(before).info.status == "RUNNING"
    again.finish(root / "run", "KILLED")
    assert client.get_run(before).info.status == "KILLED"
    assert len(client.search_runs([client.get_run(before).info.experiment_id])) == 1


@pytest.mark.parametrize("uri", ["bogus://nowhere", "http://127.0.0.1:9"])
def test_a_tracker_that_cannot_start_is_one_line(
    uri, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # port 9: nothing listens
    sms = write_sms_file(tmp_path / "SMSSpamCollection", n_ham=30, n_spam=10)
    defaults = RunConfig(
        model=ModelConfig(model_dir=str(tiny_model_dir)),
        data=DataConfig(data_file=str(sms), train_size=16, val_size=8, test_size=8),
        train=TrainConfig(epochs=1),
    )
    argv = ["--log-to", "mlflow", "--mlflow-uri", uri, "--run-dir", str(tmp_path / "run")]
    code = cli.main(argv, prog="x", description="", epilog="", defaults=defaults)
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: --log-to mlflow could not start at {uri} (")
    assert "check --mlflow-uri" in err and not (tmp_path / "run" / "classifier.json").exists()


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    """One SQLite MLflow store for the tests below (making one takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def test_a_damaged_mlflow_run_file_starts_a_new_run(store_uri, tmp_path, monkeypatch, caplog):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    uri = store_uri
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for text in ("{not json", "[1, 2]", json.dumps({"tracking_uri": uri})):
        (run_dir / "mlflow_run.json").write_text(text)
        assert _read_run_file(run_dir) is None
    (run_dir / "mlflow_run.json").write_text(json.dumps({"tracking_uri": uri, "run_id": 5}))
    again = MLflow(uri, run_dir, {}, resume=True)
    assert "mlflow_run.json is not" in caplog.text
    written = json.loads((run_dir / "mlflow_run.json").read_text())
    assert written == {"tracking_uri": uri, "run_id": again.run_id}
    assert MlflowClient(tracking_uri=uri).get_run(again.run_id).info.status == "RUNNING"


def test_two_workers_making_the_experiment_at_once(store_uri, monkeypatch):
    """The other worker makes the experiment between this one's look-up and its
    create_experiment: this one takes theirs."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "race")
    uri = store_uri
    theirs = MlflowClient(tracking_uri=uri).create_experiment("race")
    client = MlflowClient(tracking_uri=uri)
    looked_up = []

    def not_yet(name):  # the first look-up came before the other worker's create
        looked_up.append(name)
        return None if len(looked_up) == 1 else MlflowClient.get_experiment_by_name(client, name)

    monkeypatch.setattr(client, "get_experiment_by_name", not_yet)
    mine = MLflow.__new__(MLflow)
    mine.uri, mine.client = uri, client
    assert mine._experiment() == theirs
