"""experiments.grid: rows run one after another, a finished row is not run again after
an interruption, and the table reads the runs' own metrics."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from synthetic import write_sms_file

from gpt2_jax.commands import grid

pytestmark = pytest.mark.slow


def test_grid_runs_rows_resumes_after_a_kill_and_tables_them(tiny_model_dir, tmp_path):
    data = write_sms_file(tmp_path / "SMSSpamCollection", n_ham=60, n_spam=30)
    out = tmp_path / "grid"
    rows = tmp_path / "rows.json"
    rows.write_text(
        json.dumps(
            [
                {"name": "lab", "flags": []},
                {"name": "first", "flags": ["--pool", "first"]},
                {"name": "lora", "flags": ["--trainable", "lora", "--lora-rank", "2"]},
            ]
        )
    )
    cmd = [
        sys.executable,
        "-m",
        "experiments.grid",
        "--out",
        str(out),
        "--rows-file",
        str(rows),
        "--",
        "--model-dir",
        str(tiny_model_dir),
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
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # first try: killed once the first row has finished
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and grid.result_of(out / "lab") is None:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    output = proc.communicate()[0]
    assert grid.result_of(out / "lab") is not None, output[-3000:]
    lab_stamp = (out / "lab" / "metrics.json").stat().st_mtime_ns
    # second try: the same command finishes the grid without redoing the first row
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "row lab: finished earlier, kept" in done.stdout
    assert (out / "lab" / "metrics.json").stat().st_mtime_ns == lab_stamp
    state = json.loads((out / "grid.json").read_text())["rows"]
    assert set(state) == {"lab", "first", "lora"}
    table = (out / "grid.md").read_text()
    for name in ("lab", "first", "lora"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        test_acc = 100 * metrics["epochs"][-1]["test"]["accuracy"]
        line = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert f"{test_acc:.2f}%" in line
    tiny = "custom (2 layers, 32 dims)"
    assert f"| lora | {tiny} | pretrained | last | lora |" in table
    assert f"| first | {tiny} | pretrained | first | last_block |" in table
    # the lab and the LoRA row share the frozen prefix? (LoRA on all blocks: no prefix)
    assert list((out / "prefix-cache").glob("prefix-*.npy"))


def test_book_rows_and_rows_file_checks(tmp_path):
    rows = grid.book_rows()
    assert [r["book_row"] for r in rows] == list(range(1, 20))
    assert grid.flag_value(["--pool", "first", "--pool=mean"], "--pool", "last") == "mean"
    bad = tmp_path / "rows.json"
    bad.write_text(json.dumps([{"name": "a/b", "flags": []}]))
    with pytest.raises(SystemExit, match="row 0 must be"):
        grid.read_rows_file(bad)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie, ended but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _without_times(epochs) -> str:
    return json.dumps([{k: v for k, v in e.items() if not k.endswith("seconds")} for e in epochs])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_sigterm_stops_the_grid_and_its_run_and_the_row_resumes(tiny_model_dir, tmp_path):
    data = write_sms_file(tmp_path / "SMSSpamCollection", n_ham=120, n_spam=60)
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"name": "lab", "flags": []}]))
    flags = ["--model-dir", str(tiny_model_dir), "--data-file", str(data), "--offline"]
    flags += ["--train-size", "96", "--val-size", "16", "--test-size", "16", "--epochs", "8"]
    flags += ["--batch-size", "8"]

    def grid_cmd(out):
        return [sys.executable, "-m", "experiments.grid", "--out", str(out)] + [
            "--rows-file",
            str(rows),
            "--",
            *flags,
        ]

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "stopped"
    proc = subprocess.Popen(
        grid_cmd(out),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        first_epoch = out / "lab" / "checkpoints" / "1"
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not first_epoch.is_dir():
            time.sleep(0.02)
        children = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)  # the grid alone, as a process manager would
        started = time.monotonic()
        output = proc.communicate(timeout=120)[0]
        took = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert len(children) == 1, output[-3000:]
    assert proc.returncode == 130 and "grid stopped (SIGTERM)" in output, output[-3000:]
    assert not _alive(children[0]), "the row's run outlived the grid"
    assert took < 60, took
    stopped = json.loads((out / "lab" / "metrics.json").read_text())
    assert stopped["status"].startswith("stopped"), stopped["status"]
    assert 1 <= len(stopped["epochs"]) < 8
    print(f"\nthe grid and its run ended {took:.1f} s after SIGTERM")

    done = subprocess.run(
        grid_cmd(out), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "row lab: resuming its stopped run" in done.stdout
    resumed = json.loads((out / "lab" / "metrics.json").read_text())
    assert resumed["status"] == "finished"
    assert resumed["resumed"][0]["after_epoch"] == len(stopped["epochs"])

    whole = subprocess.run(
        grid_cmd(tmp_path / "whole"), cwd=REPO, env=env, capture_output=True, timeout=600
    )
    assert whole.returncode == 0
    uninterrupted = json.loads((tmp_path / "whole" / "lab" / "metrics.json").read_text())
    assert _without_times(resumed["epochs"]) == _without_times(uninterrupted["epochs"])
    test_acc = 100 * uninterrupted["epochs"][-1]["test"]["accuracy"]
    line = next(x for x in (out / "grid.md").read_text().splitlines() if x.startswith("| lab |"))
    assert f"{test_acc:.2f}%" in line
