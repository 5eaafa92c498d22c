"""Time estimates come early in a pass and are within a factor of 2 of what it takes."""

import re
import time

import numpy as np
import pytest
from training_helpers import collected, tiny_data

from gpt2_jax.finetune.config import SpeedConfig
from gpt2_jax.finetune.job import TrainingJob, TrainingPlan, train_classifier
from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import GPTModel, init_params
from gpt2_jax.training import train as training
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.training.partition import Partition, resolve_trainable
from gpt2_jax.training.prefix import compute_prefix
from gpt2_jax.training.progress import Progress

# Wide enough that a batch is milliseconds of real work, small enough to compile in seconds.
CFG = GPTConfig(
    vocab_size=50257, context_length=128, emb_dim=128, n_heads=4, n_layers=4, num_classes=2
)
ESTIMATE = re.compile(r"^(.*): about ([\d.]+) s for (\d+) ")


def _estimates(lines: list[str]) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in map(ESTIMATE.match, lines) if m}


def _within_2x(estimate: float, took: float) -> None:
    assert took / 2 <= estimate <= 2 * took, (estimate, took)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, seed=3)


def test_the_prefix_estimate_is_within_2x_of_the_pass(params):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, CFG.vocab_size, (480, CFG.context_length)).astype(np.int32)
    lengths = np.full(len(ids), CFG.context_length)
    lines: list[str] = []
    start = time.perf_counter()
    with collected(lines):
        compute_prefix(CFG, params, ids, lengths, 3, batch_size=8, desc="prefix train")
    took = time.perf_counter() - start
    estimate = _estimates(lines)["prefix train"]
    said_at = next(i for i, line in enumerate(lines) if ESTIMATE.match(line))
    assert said_at <= 1, lines  # before the first tenth of the pass is reported done
    _within_2x(estimate, took)


def test_the_epoch_estimate_is_within_2x_of_the_epoch(params, monkeypatch):
    monkeypatch.setattr(training, "LOUD_SECONDS", 0.0)  # a short pass says it too
    data = {"train": tiny_data(1, 400, length=CFG.context_length)}
    tc = TrainConfig(batch_size=4, epochs=2, lr=1e-4)
    part = Partition.from_patterns(params, resolve_trainable(["last_block"], CFG.n_layers))
    plan = TrainingPlan(data, ("a", "b"), tc, SpeedConfig(), "last", np.ones(2, np.float32))
    lines: list[str] = []
    with collected(lines):
        _, history = train_classifier(TrainingJob(plan, GPTModel(CFG), part), params)
    said = _estimates(lines)
    for epoch in history:
        _within_2x(said[f"epoch {epoch['epoch']}/2"], epoch["train_seconds"])
    left = [line for line in lines if line.startswith("epoch 1 took")]
    assert len(left) == 1 and "left for epoch 2" in left[0]


def test_estimate_comes_after_a_twentieth_and_averages_the_items_after_the_first():
    now = [0.0]
    lines: list[str] = []
    progress = Progress(100, "pass", log=lines.append, estimate_after=10, clock=lambda: now[0])
    times = [10.0] + [1.0 + (i % 2) for i in range(99)]  # compiling, then 1 s and 2 s by turns
    for t in times:
        now[0] += t
        progress.done()
    progress.close()
    estimates = [line for line in lines if ESTIMATE.match(line)]
    # after item 5: the first took 10 s, items 2-5 1.5 s each -> 10 + 99 * 1.5
    assert estimates == [
        "pass: about 158 s for 100 batches (the first took 10.0 s with compiling, the next 1.50 s)"
    ]
    assert lines.index(estimates[0]) == 0  # item 5: before the first tenth's line
