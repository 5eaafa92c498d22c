"""Two processes on 127.0.0.1 as one JAX runtime (jax.distributed, gloo on CPU): a
fine-tuning run finishes with the figures of a single process, only process 0 writes
the run folder, and a run with one process killed mid-epoch resumes on both."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

# Process 1 kills itself (SIGKILL) in the middle of epoch 2 (6 steps per epoch); its
# peer then stops, as the distributed runtime does when a task dies. Both miss a dead
# peer's heartbeats after 10 s here rather than JAX's default 100 s (the test's wait).
KILL_AT = """
import functools, os, signal, sys
import jax
jax.distributed.initialize = functools.partial(
    jax.distributed.initialize, heartbeat_timeout_seconds=10
)
from gpt2_jax.commands.finetune import main
import gpt2_jax.finetune.run as finetune
if sys.argv[-1] == "1":
    real_run = finetune.run
    def run(cfg, *a, **kw):
        def die(step):
            if step == 9:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_run(cfg, *a, on_step=die, **kw)
    import gpt2_jax.finetune.cli as cli
    cli.run = run
sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flags(tiny_model_dir, data, run_dir):
    return [
        "--model-dir",
        str(tiny_model_dir),
        "--data-file",
        str(data),
        "--train-size",
        "48",
        "--val-size",
        "16",
        "--test-size",
        "16",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--pool",
        "last-real",
        "--memory-budget-gib",
        "0.001",
        "--run-dir",
        str(run_dir),
    ]


def _two_processes(flags, script=None, timeout=240):
    """Both processes of one run; returns their CompletedProcess-like results."""
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # one CPU device each: two in all
    code = (
        script
        or "import sys; from gpt2_jax.commands.finetune import main; sys.exit(main(sys.argv[1:]))"
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                *flags,
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            out, err = p.communicate()
        results.append((p.returncode, out, err))
    return results


def _figures(report):
    return [{k: v for k, v in e.items() if not k.endswith("seconds")} for e in report["epochs"]]


def _close(a, b, where=""):
    """Same epochs and accuracies; losses within 1e-5 (two devices sum in another order)."""
    assert len(a) == len(b), where
    for x, y in zip(a, b):
        for split in ("train", "val", "test"):
            assert x[split]["accuracy"] == y[split]["accuracy"], (where, split)
            assert x[split]["confusion"] == y[split]["confusion"], (where, split)
            assert x[split]["loss"] == pytest.approx(y[split]["loss"], abs=1e-5), (where, split)
        assert x["train_step_loss"] == pytest.approx(y["train_step_loss"], abs=1e-5), where


def test_two_processes_train_like_one_and_resume_after_a_kill(tiny_model_dir, tmp_path):
    from synthetic import write_sms_file

    from gpt2_jax.commands import finetune

    data = write_sms_file(tmp_path / "SMSSpamCollection", n_ham=60, n_spam=20)
    single = tmp_path / "single"
    assert finetune.main(_flags(tiny_model_dir, data, single)) == 0
    expected = _figures(json.loads((single / "metrics.json").read_text()))

    both = tmp_path / "two"
    results = _two_processes(_flags(tiny_model_dir, data, both))
    for code, out, err in results:
        assert code == 0, err[-3000:]
    assert "run folder:" in results[0][1] and "run folder:" not in results[1][1]  # 0 logs
    report = json.loads((both / "metrics.json").read_text())
    assert report["status"] == "finished"
    assert "mesh: data=2, fsdp=1 over 2 cpu device(s)" in results[0][1]
    _close(_figures(report), expected, "two processes")
    assert (both / "classifier.json").is_file() and (both / "loss.png").is_file()

    killed = tmp_path / "killed"
    results = _two_processes(_flags(tiny_model_dir, data, killed), script=KILL_AT)
    assert results[1][0] == -signal.SIGKILL
    assert results[0][0] != 0  # its peer died: the runtime stops it too
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["1"]
    assert not (killed / "classifier.json").exists()
    results = _two_processes(["--resume", str(killed)])
    for code, out, err in results:
        assert code == 0, err[-3000:]
    report = json.loads((killed / "metrics.json").read_text())
    assert report["resumed"][-1]["after_epoch"] == 1
    _close(_figures(report), expected, "resumed")


def test_when_process_0_cannot_prepare_the_folder_the_other_stops_too(tiny_model_dir, tmp_path):
    from synthetic import write_sms_file

    data = write_sms_file(tmp_path / "SMSSpamCollection", n_ham=60, n_spam=20)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("someone else's")  # not empty, no --overwrite
    results = _two_processes(_flags(tiny_model_dir, data, taken), timeout=120)
    assert [code for code, _, _ in results] == [1, 1]
    assert f"run folder {taken}" in results[0][2], results[0][2][-2000:]  # its own reason
    assert "process 0 could not prepare the run folder" in results[1][2]
    assert (taken / "notes.txt").read_text() == "someone else's"
