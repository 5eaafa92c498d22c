"""After training, the decisions fitted on the validation split: a temperature that
calibrates the probabilities (``--calibrate``) and, for two classes, the threshold on the
second class's probability that meets a target (``--decision-threshold``). Both are saved
with the classifier, recorded in ``metrics.json`` (``decisions``) and said in the log; the
calibration also draws ``calibration.png`` (a reliability diagram, before and after)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np

from gpt2_jax.data.chunks import Chunked
from gpt2_jax.finetune.job import TrainingJob
from gpt2_jax.model.gpt import GPTModel
from gpt2_jax.model.pooling import classify, reads_padding
from gpt2_jax.training.chunked import chunked_logits
from gpt2_jax.training.decisions import (
    choose_threshold,
    expected_calibration_error,
    fit_temperature,
    mean_nll,
    softmax,
)

logger = logging.getLogger(__name__)
BINS = 10  # of the reliability diagram and the ECE


@dataclasses.dataclass(frozen=True)
class Decisions:
    """What the classifier saves (``temperature``, ``threshold``) and the run records."""

    temperature: float = 1.0
    threshold: float | None = None
    record: dict[str, Any] = dataclasses.field(default_factory=dict)


def validation_logits(job: TrainingJob, params) -> np.ndarray:
    """The trained model's logits [N, C] on the validation split, in batches of the
    training batch size at the split's full width (the last batch repeats rows)."""
    cfg = dataclasses.replace(job.model.cfg, drop_rate=0.0)
    pool, val, rows = job.plan.pool, job.plan.encoded["val"], job.plan.train.batch_size
    if isinstance(val, Chunked):
        padded = reads_padding(pool, cfg.causal)
        how = job.plan.chunk_pool or "mean"
        return chunked_logits(cfg, params, val, pool, how, rows, padded).astype(np.float64)
    logits = jax.jit(lambda p, ids, lengths: classify(GPTModel(cfg), p, ids, lengths, pool))
    out = []
    for start in range(0, len(val), rows):
        idx = np.arange(start, min(start + rows, len(val)))
        batch = np.resize(idx, rows)
        out.append(np.asarray(logits(params, val.ids[batch], val.lengths[batch]))[: len(idx)])
    return np.concatenate(out).astype(np.float64)


def fit_decisions(job: TrainingJob, params, run_dir: Path | None) -> Decisions | None:
    """The decisions the run asks for, fitted on validation (None: it asks for none);
    ``run_dir``: where ``calibration.png`` goes (None: other processes draw nothing)."""
    tc = job.plan.train
    if not (tc.calibrate or tc.decision_threshold):
        return None
    logits, labels = validation_logits(job, params), job.plan.encoded["val"].labels
    temperature, record = 1.0, {}
    if tc.calibrate:
        temperature = fit_temperature(logits, labels)
        record["calibration"] = _calibration(logits, labels, temperature)
        if run_dir is not None:
            plot_reliability(softmax(logits), softmax(logits, temperature), labels, run_dir)
    threshold = None
    if tc.decision_threshold:
        chosen = choose_threshold(
            softmax(logits, temperature)[:, 1], labels == 1, tc.decision_threshold
        )
        threshold = chosen.value
        record["threshold"] = dataclasses.asdict(chosen)
        _say_threshold(chosen, job.plan.classes)
    return Decisions(temperature, threshold, record)


def _calibration(logits: np.ndarray, labels: np.ndarray, t: float) -> dict[str, float]:
    before, after = softmax(logits), softmax(logits, t)
    figures = {
        "temperature": t,
        "nll_before": mean_nll(logits, labels),
        "nll_after": mean_nll(logits, labels, t),
        "ece_before": expected_calibration_error(before, labels, BINS),
        "ece_after": expected_calibration_error(after, labels, BINS),
    }
    logger.info(
        f"calibration: temperature {t:.3f} fitted on validation; NLL "
        f"{figures['nll_before']:.4f} -> {figures['nll_after']:.4f}, expected calibration "
        f"error {figures['ece_before']:.4f} -> {figures['ece_after']:.4f} (calibration.png)"
    )
    return figures


def _say_threshold(chosen, classes: tuple[str, ...]) -> None:
    figures = (
        f"precision {chosen.precision:.3f}, recall {chosen.recall:.3f}, F1 {chosen.f1:.3f} "
        "on validation"
    )
    if chosen.met:
        logger.info(
            f"decision threshold {chosen.value:.4f} for {chosen.target}: {classes[1]} when "
            f"p({classes[1]}) >= it; {figures}"
        )
    else:
        logger.warning(
            f"WARNING: no threshold reaches {chosen.target} on validation; the closest, "
            f"{chosen.value:.4f}, gives {figures}"
        )


def plot_reliability(before: np.ndarray, after: np.ndarray, labels: np.ndarray, run_dir: Path):
    """``calibration.png``: accuracy against confidence per bin, before and after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="calibrated")
    for name, probs in (("before", before), ("after", after)):
        confidence, correct = probs.max(-1), probs.argmax(-1) == labels
        which = np.clip((confidence * BINS).astype(int), 0, BINS - 1)
        xs = [confidence[which == k].mean() for k in range(BINS) if (which == k).any()]
        ys = [correct[which == k].mean() for k in range(BINS) if (which == k).any()]
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("calibration on validation")
    ax.legend(loc="upper left")
    fig.savefig(run_dir / "calibration.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
