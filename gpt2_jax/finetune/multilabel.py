"""A run with several labels per text (``--multi-label``, ``--label-sep``,
``--label-columns``): its data read, checked and split (``read_label_data``), each
label's threshold chosen on validation after training (``fit_thresholds``), and the
validation texts the served page offers. The loss and the metrics are
``training.multilabel``'s; the run's steps are ``finetune.run``'s."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import jax
import numpy as np

from gpt2_jax.data import checks
from gpt2_jax.data.multilabel import label_matrix, label_order, read_label_sets, split_label_sets
from gpt2_jax.data.splits import Splits
from gpt2_jax.finetune.config import DataConfig
from gpt2_jax.finetune.decisions import Decisions
from gpt2_jax.finetune.examples import MAX_CHARS, PER_CLASS
from gpt2_jax.finetune.job import TrainingJob
from gpt2_jax.model.gpt import GPTModel
from gpt2_jax.model.pooling import classify
from gpt2_jax.training.config import fixed_threshold
from gpt2_jax.training.multilabel import choose_thresholds, multilabel_metrics

logger = logging.getLogger(__name__)


def read_label_data(d: DataConfig, seed: int):
    """``read_data`` for label sets: read, order the labels, split (the lab's shuffled cut,
    not stratified); returns the fields of ``finetune.inputs.LabelledData``."""
    if d.dataset is not None:
        raise ValueError(
            "--multi-label reads label sets from a file (--data-file); --dataset gives one "
            "label per text"
        )
    if d.data_file is None:
        raise ValueError(
            "--multi-label needs --data-file: the SMS collection has one label per message"
        )
    if d.balance:
        raise ValueError(
            "--balance undersamples classes, and a text with several labels has no single "
            "one; leave it out with --multi-label"
        )
    if d.stratify:  # experiments.finetune's default: no classes to keep in proportion
        logger.info("several labels per text: the splits are a shuffled cut (not stratified)")
    columns = tuple(d.label_columns.split(",")) if d.label_columns else None

    def read(path: Path, fmt: str):
        return read_label_sets(
            path,
            fmt=fmt,
            text_column=d.text_column,
            label_column=d.label_column,
            label_sep=d.label_sep,
            label_columns=columns,
        )

    path = Path(d.data_file)
    df = read(path, d.data_format)
    explicit = d.class_order() or columns
    labels = label_order(df, explicit, source=str(path), column=d.label_column)
    label_matrix(df, labels)  # every name known, before the cut
    cut_val, cut_test = d.val_file is None, d.test_file is None
    sizes = d.cut_sizes(len(df), cut_val, cut_test)
    splits = split_label_sets(
        df, sizes, seed, holdout_at=d.holdout_row() if cut_val and cut_test else None
    )
    extra = {}
    for name, file in (("val", d.val_file), ("test", d.test_file)):
        if file is not None:
            fmt = "auto" if d.data_format == "auto" else d.data_format
            extra[name] = read(Path(file), fmt).assign(y=0)
    splits = dataclasses.replace(splits, **extra)
    splits, duplicates, dropped = checks.count_duplicates(splits, drop=d.drop_duplicates)
    files = {"train": str(path), "val": d.val_file or str(path), "test": d.test_file or str(path)}
    return splits, labels, files, len(df), duplicates, dropped


def targets(splits: Splits, labels: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Each split's ``[N, K]`` 0/1 matrix (a name outside ``labels`` names its row)."""
    return {name: label_matrix(frame, labels) for name, frame in splits.items()}


def split_probs(job: TrainingJob, params, name: str) -> np.ndarray:
    """The trained model's label probabilities ``[N, K]`` on split ``name``, in batches
    of the training batch size (the last repeats rows)."""
    cfg = dataclasses.replace(job.model.cfg, drop_rate=0.0)
    pool, data, rows = job.plan.pool, job.plan.encoded[name], job.plan.train.batch_size
    probs = jax.jit(
        lambda p, ids, lengths: jax.nn.sigmoid(classify(GPTModel(cfg), p, ids, lengths, pool))
    )
    out = [np.zeros((0, len(job.plan.classes)))]
    for start in range(0, len(data), rows):
        idx = np.arange(start, min(start + rows, len(data)))
        batch = np.resize(idx, rows)
        out.append(np.asarray(probs(params, data.ids[batch], data.lengths[batch]))[: len(idx)])
    return np.concatenate(out).astype(np.float64)


def fit_thresholds(job: TrainingJob, params) -> Decisions:
    """Each label's threshold (``--thresholds``: the highest F1 on validation, or one
    fixed probability), with the validation and test metrics at those thresholds for
    ``metrics.json``'s ``decisions``."""
    plan, labels = job.plan, job.plan.classes
    fixed = fixed_threshold(plan.train.thresholds)
    record: dict = {"thresholds_by": plan.train.thresholds}
    if fixed is None:
        val = plan.encoded["val"]
        chosen, f1 = choose_thresholds(split_probs(job, params, "val"), val.labels)
        record["validation_f1"] = dict(zip(labels, f1))
    else:
        chosen = [fixed] * len(labels)
    record["thresholds"] = dict(zip(labels, chosen))
    for name, data in plan.encoded.items():
        if name != "train" and len(data):
            probs = split_probs(job, params, name)
            record[name] = multilabel_metrics(data.labels, probs, float("nan"), labels, chosen)
    logger.info(
        "label thresholds ("
        + ("highest F1 on validation" if fixed is None else "fixed")
        + "): "
        + ", ".join(f"{n} {t:.4f}" for n, t in zip(labels, chosen))
        + "".join(
            f"; {name} at them: micro-F1 {record[name]['micro_f1']:.3f}, macro-F1 "
            f"{record[name]['macro_f1']:.3f}"
            for name in ("val", "test")
            if name in record
        )
    )
    return Decisions(record=record, thresholds=tuple(chosen))


def pick_label_examples(splits: Splits, labels: tuple[str, ...], per_label: int = PER_CLASS):
    """Up to ``per_label`` validation (else test, else training) texts holding each label,
    short ones first, each text once."""
    frame = next(f for f in (splits.val, splits.test, splits.train) if f is not None and len(f))
    picked: list[str] = []
    for name in labels:
        texts = [str(t) for t, s in zip(frame["text"], frame["labels"]) if name in s]
        texts = [t for t in texts if t not in picked]
        short = [t for t in texts if len(t) <= MAX_CHARS]
        picked += (short + [t for t in texts if len(t) > MAX_CHARS])[:per_label]
    return picked
