"""A stop ends the process within seconds; progress counts work that has finished."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import REPO
from training_helpers import collected

from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import init_params
from gpt2_jax.training import prefix
from gpt2_jax.training.progress import Progress
from gpt2_jax.weights.synthetic import write_openai_model_dir

# Wide enough that a batch of the frozen blocks is real work (the prefix pass of the
# data below lasts several seconds), small enough to compile in a few.
SLOW_SETTINGS = {"n_vocab": 50257, "n_ctx": 256, "n_embd": 128, "n_head": 4, "n_layer": 4}
CFG = GPTConfig(
    vocab_size=50257, context_length=64, emb_dim=32, n_heads=4, n_layers=3, num_classes=2
)
WORDS = "call me later free prize win now ok see you home lunch milk late sorry text".split()


def _unique_sms(path, n: int):
    """``n`` distinct SMS-format lines (no repeats: each is computed in the prefix)."""
    rng = random.Random(0)
    lines = [
        f"{'spam' if i % 4 == 0 else 'ham'}\t{i} " + " ".join(rng.choices(WORDS, k=12))
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_sigterm_in_the_prefix_pass_ends_the_process_within_seconds(bpe_dir, tmp_path):
    model_dir = write_openai_model_dir(tmp_path / "model", SLOW_SETTINGS, seed=1, bpe_dir=bpe_dir)
    sms_file = _unique_sms(tmp_path / "SMSSpamCollection", 1200)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "experiments.spam", "--model-dir", str(model_dir)]
    cmd += ["--data-file", str(sms_file), "--run-dir", str(run_dir), "--max-length", "context"]
    cmd += ["--train-size", "900", "--val-size", "150", "--test-size", "150", "--epochs", "1"]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, sent = [], None
    assert proc.stdout is not None
    for line in proc.stdout:
        output.append(line)
        if sent is None and "computing the frozen blocks" in line:
            time.sleep(1)  # batches launched and in flight
            sent = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            break
    threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True).start()
    try:
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
    took = time.perf_counter() - sent if sent is not None else None
    text = "".join(output)
    assert sent is not None, text[-3000:]
    assert "prefix computed" not in text, "the prefix pass ended before the signal: " + text
    assert took < 10 and code == 130, (took, code, text[-3000:])
    status = json.loads((run_dir / "metrics.json").read_text())["status"]
    assert status.startswith("stopped: terminated (SIGTERM)"), status


def test_prefix_progress_counts_batches_when_their_results_are_ready(monkeypatch):
    """Each progress line comes after as many results were awaited as it counts."""
    events: list[str] = []

    def awaited(x):
        events.append("ready")
        return x

    monkeypatch.setattr(prefix, "wait_ready", awaited)
    ids = np.random.default_rng(0).integers(0, 50, (6, 16)).astype(np.int32)
    lengths = np.full(6, 16)
    p = init_params(CFG, seed=5)
    with collected(events):
        prefix.compute_prefix(CFG, p, ids, lengths, 2, batch_size=1, desc="prefix")
    lines = [e for e in events if e != "ready"]
    assert len(lines) == 6 and lines[-1].startswith("prefix: 6/6 batches (100 %)")
    for k in range(1, 7):
        at = events.index(next(e for e in lines if e.startswith(f"prefix: {k}/6 ")))
        assert events[:at].count("ready") == k, events


def test_progress_lines_give_rate_time_left_and_an_estimate():
    now = [0.0]
    logs: list[str] = []
    progress = Progress(10, "pass", log=logs.append, estimate_after=10, clock=lambda: now[0])
    for t in (5.0, 7.0, 9.0, 11.0, 13.0, 15.0, 17.0, 19.0, 21.0, 23.0):
        now[0] = t
        progress.done()
    progress.close()
    assert logs[0] == "pass: 1/10 batches (10 %), 5 s, 0.2 batches/s, about 45 s left"
    assert (
        logs[1]
        == "pass: about 23 s for 10 batches (the first took 5.0 s with compiling, the next 2.00 s)"
    )
    assert logs[2].startswith("pass: 2/10 batches (20 %), 7 s")
    assert logs[-1] == "pass: 10/10 batches (100 %), 23 s"
    assert Progress(9, "short", log=logs.append, estimate_after=10).estimate is False
