"""Expected failures end with one clear line, a non-zero exit and a true status in
metrics.json; a run folder belongs to one run at a time."""

import errno
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO
from synthetic import write_sms_file

from gpt2_jax.commands import spam
from gpt2_jax.finetune import data_config as finetune_config
from gpt2_jax.finetune import recording
from gpt2_jax.finetune.config import DataConfig, ModelConfig, OutputConfig, RunConfig
from gpt2_jax.finetune.folder import RunFolderLock
from gpt2_jax.finetune.run import run
from gpt2_jax.training.config import TrainConfig

SIZES = dict(train_size=160, val_size=40, test_size=40)


@pytest.fixture(scope="module")
def sms_file(tmp_path_factory):
    return write_sms_file(tmp_path_factory.mktemp("data") / "SMSSpamCollection")


def _args(model_dir, sms_file, run_dir, *extra):
    return [
        "--model-dir",
        str(model_dir),
        "--data-file",
        str(sms_file),
        "--run-dir",
        str(run_dir),
        "--train-size",
        "160",
        "--val-size",
        "40",
        "--test-size",
        "40",
        "--epochs",
        "3",
        "--lr",
        "1e-3",
        *extra,
    ]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(("error:", "stopped:"))]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "nan"], "lr must be a positive number, got nan"),
        (["--lr", "inf"], "lr must be a positive number, got inf"),
        (["--weight-decay", "nan"], "weight_decay must be a number >= 0"),
        (["--class-weights", "ham=inf,spam=1"], "at 'ham=inf'"),
        (["--train-size", "nan"], "train_size must be a count or a fraction"),
        (["--drop-rate", "nan"], "drop_rate must be in [0, 1)"),
        (["--memory-budget-gib", "0"], "memory_budget_gib must be"),
        (["--trainable", "h1/[a"], "--trainable 'h1/[a' is neither a preset"),
    ],
)
def test_impossible_flags_stop_before_any_work(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        spam.main(flags)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_run_dir_that_is_a_file_or_cannot_be_made(tiny_model_dir, sms_file, tmp_path, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    assert spam.main(_args(tiny_model_dir, sms_file, a_file)) == 1
    assert "is a file, not a folder" in _one_error_line(capsys.readouterr().err)
    assert spam.main(_args(tiny_model_dir, sms_file, a_file / "run")) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"cannot create the run folder {a_file / 'run'}" in line
    assert a_file.read_text() == "keep me"


def test_a_folder_in_use_is_refused(tiny_model_dir, sms_file, tmp_path):
    folder = tmp_path / "busy"
    folder.mkdir()
    lock = RunFolderLock(folder)  # another run holds it
    cfg = RunConfig(
        model=ModelConfig(model_dir=str(tiny_model_dir)),
        data=DataConfig(data_file=str(sms_file), **SIZES),
        output=OutputConfig(run_dir=str(folder), overwrite=True),
    )
    try:
        with pytest.raises(FileExistsError, match=r"in use by another run \(pid \d+"):
            run(cfg, log=lambda s: None)
    finally:
        lock.release()
    assert [p.name for p in folder.iterdir()] == [".lock"]  # --overwrite removed nothing


@pytest.mark.slow
def test_two_runs_started_together_on_one_folder(tiny_model_dir, sms_file, tmp_path):
    run_dir = tmp_path / "shared"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [
        sys.executable,
        "-m",
        "experiments.spam",
        *_args(tiny_model_dir, sms_file, run_dir, "--epochs", "1"),
    ]
    procs = [
        subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    assert str(run_dir) in _one_error_line(loser)
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["status"] == "finished" and (run_dir / "classifier.json").is_file()


@pytest.mark.slow
def test_full_disk_gives_one_line_and_a_true_status(
    tiny_model_dir, sms_file, tmp_path, monkeypatch, capsys
):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(recording, "plot_history", disk_full)  # after epoch 1 is saved
    run_dir = tmp_path / "r"
    assert spam.main(_args(tiny_model_dir, sms_file, run_dir)) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in _one_error_line(err)
    status = json.loads((run_dir / "metrics.json").read_text())["status"]
    assert status.startswith(
        "stopped: [Errno 28] No space left on device; the last good state (epoch 1)"
    )
    assert f"--resume {run_dir}" in status and f"--resume {run_dir}" in err


def test_a_stop_records_only_the_epochs_whose_state_was_saved(
    tiny_model_dir, sms_file, tmp_path, monkeypatch, capsys
):
    """Stopped while epoch 2's state is being saved (a full disk here, SIGTERM in the
    grid's test): metrics.json lists epoch 1 alone, the epoch --resume goes on from."""
    from gpt2_jax.training.checkpoints import EpochCheckpoints

    save = EpochCheckpoints.save

    def full_at_epoch_2(self, epoch, state, meta):
        if epoch == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, epoch, state, meta)

    monkeypatch.setattr(EpochCheckpoints, "save", full_at_epoch_2)
    run_dir = tmp_path / "r"
    assert spam.main(_args(tiny_model_dir, sms_file, run_dir)) == 1
    assert "No space left on device" in _one_error_line(capsys.readouterr().err)
    report = json.loads((run_dir / "metrics.json").read_text())
    assert "the last good state (epoch 1)" in report["status"]
    assert [e["epoch"] for e in report["epochs"]] == [1]


def test_debug_shows_the_traceback(tmp_path, capsys):
    args = ["--data-file", str(tmp_path / "missing.csv"), "--format", "csv"]
    assert spam.main(args) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert spam.main(args + ["--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


TERMINATED_RUN = """
import os, signal, sys
from gpt2_jax.commands import spam
import gpt2_jax.finetune.cli as cli
from gpt2_jax.finetune.run import run

def sigterm_at_15(step):
    if step == 15:  # 10 steps per epoch: half-way through epoch 2
        os.kill(os.getpid(), signal.SIGTERM)

cli.run = lambda cfg, **kw: run(cfg, on_step=sigterm_at_15, **kw)
sys.exit(spam.main({argv!r}))
"""


@pytest.mark.slow
def test_sigterm_is_recorded_and_resumed(tiny_model_dir, sms_file, tmp_path):
    run_dir = tmp_path / "r"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    script = TERMINATED_RUN.format(argv=_args(tiny_model_dir, sms_file, run_dir))
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 130, done.stderr[-2000:]
    assert _one_error_line(done.stderr) == "stopped: terminated (SIGTERM)"
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["status"].startswith(
        "stopped: terminated (SIGTERM); the last good state (epoch 1)"
    )
    resumed = subprocess.run(
        [sys.executable, "-m", "experiments.spam", "--resume", str(run_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["status"] == "finished"
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3]


@pytest.mark.slow
def test_resume_skips_a_damaged_epoch_and_says_so(tiny_model_dir, sms_file, tmp_path):
    from training_helpers import damage_checkpoint as _damage

    run_dir = tmp_path / "r"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    argv = _args(tiny_model_dir, sms_file, run_dir, "--keep-checkpoints", "3")
    script = TERMINATED_RUN.format(argv=argv).replace("step == 15", "step == 25")
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 130, done.stderr[-2000:]  # stopped in epoch 3, epochs 1-2 saved
    _damage(run_dir / "checkpoints" / "2", how="truncate")
    resumed = subprocess.run(
        [sys.executable, "-m", "experiments.spam", "--resume", str(run_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "checkpoints/2 is damaged" in resumed.stdout + resumed.stderr
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["status"] == "finished"
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3]
    (entry,) = report["resumed"]
    assert entry["after_epoch"] == 1 and [s["epoch"] for s in entry["skipped"]] == [2]


def test_overwrite_never_empties_a_folder_that_is_not_a_run(tiny_model_dir, tmp_path, capsys):
    from synthetic import write_sms_file

    precious = tmp_path / "precious"
    precious.mkdir()
    data = write_sms_file(precious / "SMSSpamCollection")
    (precious / "thesis.txt").write_text("years of work")
    args = [
        "--model-dir",
        str(tiny_model_dir),
        "--data-file",
        str(data),
        "--epochs",
        "1",
        "--train-size",
        "160",
        "--val-size",
        "40",
        "--test-size",
        "40",
        "--run-dir",
        str(precious),
        "--overwrite",
    ]
    assert spam.main(args) == 1
    assert "not an earlier run's folder" in _one_error_line(capsys.readouterr().err)
    (precious / "metrics.json").write_text("{}")  # looks like a run, but holds the data
    assert spam.main(args) == 1
    assert f"holds this run's input {data}" in _one_error_line(capsys.readouterr().err)
    assert (precious / "thesis.txt").read_text() == "years of work" and data.is_file()


def test_python_api_takes_natural_forms():
    assert TrainConfig(trainable="all").trainable == ("all",)
    assert TrainConfig(class_weights={"ham": 1, "spam": 3.5}).class_weights == "ham=1,spam=3.5"
    assert DataConfig(labels=["spam", "ham"]).labels == "spam,ham"
    assert finetune_config._size("1.0") == 1.0 and finetune_config._size("12") == 12


def test_lab_points_tables_to_finetune(tmp_path, capsys):
    with pytest.raises(SystemExit):
        spam.main(["--data-file", str(tmp_path / "tickets.csv")])
    assert "experiments.finetune" in capsys.readouterr().err
