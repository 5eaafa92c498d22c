"""experiments.grid: rows run one after another, a finished row is not run again after
an interruption, and the table reads the runs' own metrics."""

import json
import os
import signal
import subprocess
import sys
import time

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
