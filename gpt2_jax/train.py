"""Fine-tuning: which parameters train, the optimizer, the loss, the jitted steps, the loop.

Freezing is data: ``trainable`` is a tuple of regular expressions matched against
slash-joined parameter names (``h11/attn/c_attn/kernel``). Matching leaves get AdamW,
the others ``optax.set_to_zero`` and therefore no optimizer state.
"""
from __future__ import annotations

import dataclasses
import re
import time
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from .data import Encoded, epoch_order
from .metrics import classification_metrics
from .model import GPTModel
from .pooling import POOLS, pool_logits, pool_positions
from .prefix import bucket_length, cached_prefix, first_trainable_block
from .resume import EpochCheckpoints, run_fingerprints
from .tree import named_leaves, named_tree_map

TRAINABLE, FROZEN = "trainable", "frozen"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 16
    epochs: int = 4
    lr: float = 5e-5
    weight_decay: float = 0.1
    seed: int = 123
    trainable: tuple[str, ...] = ()  # empty: last block + final norm + head
    class_weights: tuple[float, ...] | None = ()  # (): n / (k * count_c); None: unweighted
    pool: str = "last"
    # Speed, all exact except prefix_dtype (see gpt2_jax.prefix):
    cache_prefix: bool = True  # compute the frozen blocks once per message
    pooled_only: bool = True  # last block: only the pooled position
    buckets: bool = True  # last-real pooling: pad each batch only to its longest message
    prefix_dtype: str | None = None  # "bfloat16": mixed-precision frozen prefix
    prefix_cache_dir: str | None = None  # keep prefix outputs on disk for later runs

    def __post_init__(self):
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.prefix_dtype not in (None, "float32", "bfloat16"):
            raise ValueError(f"prefix_dtype must be float32 or bfloat16, got {self.prefix_dtype!r}")


def default_trainable(n_layers: int) -> tuple[str, ...]:
    """The lab's choice: the last transformer block, the final LayerNorm and the head."""
    return (f"h{n_layers - 1}/.*", "ln_f/.*", "head/.*")


def trainable_labels(params, patterns: Iterable[str]):
    """A tree like ``params`` with ``"trainable"`` or ``"frozen"`` at each leaf."""
    patterns = tuple(patterns)
    compiled = [re.compile(p) for p in patterns]
    names = list(named_leaves(params))
    unused = [p for p, c in zip(patterns, compiled) if not any(c.fullmatch(n) for n in names)]
    if unused:
        tops = sorted({n.split("/")[0] for n in names}, key=lambda s: (len(s), s))
        raise ValueError(f"trainable pattern(s) {unused} match no parameter; names look like "
                         f"{names[0]!r}, top-level scopes are {tops}")
    return named_tree_map(
        lambda name, _: TRAINABLE if any(c.fullmatch(name) for c in compiled) else FROZEN, params)


def split_counts(params, labels) -> dict[str, int]:
    counts = {TRAINABLE: 0, FROZEN: 0}
    for p, label in zip(jax.tree.leaves(params), jax.tree.leaves(labels)):
        counts[label] += int(np.prod(p.shape))
    return counts


def make_optimizer(labels, lr: float, weight_decay: float) -> optax.GradientTransformation:
    return optax.multi_transform(
        {TRAINABLE: optax.adamw(lr, weight_decay=weight_decay), FROZEN: optax.set_to_zero()},
        labels,
    )


def class_weights_for(labels: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """``n / (k * count_c)``: each class contributes equally to the loss."""
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        raise ValueError(f"training labels lack class(es) {np.flatnonzero(counts == 0).tolist()}; "
                         f"cannot weight classes (counts {counts.tolist()})")
    return (len(labels) / (num_classes * counts)).astype(np.float32)


def per_example_nll(logits, labels):
    """[B, C], [B] -> [B]: -log softmax(logits)[label]."""
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]


def weighted_cross_entropy(logits, labels, weights):
    """Mean of ``w[y] * nll`` divided by the mean of ``w[y]`` (PyTorch's weighted mean)."""
    nll = per_example_nll(logits, labels)
    w = weights[labels]
    return jnp.sum(w * nll) / jnp.sum(w)


@dataclasses.dataclass
class Steps:
    train: Callable
    eval: Callable


def make_steps(model: GPTModel, tx: optax.GradientTransformation, pool: str,
               class_weights: np.ndarray, seed: int, *, start: int = 0,
               pooled_only: bool = True, labels=None) -> Steps:
    """``train(params, opt_state, x, lengths, labels, step) -> (params, opt_state, loss,
    correct, finite)`` and ``eval(params, x, lengths, labels) -> (per-example nll, weights,
    preds)``.

    ``x`` is token ids [B, T] or, with ``start=k``, the hidden states entering block k
    [B, T, E]. ``pooled_only`` computes just the pooled position in the last block.
    ``finite`` says whether the loss and the gradients of the trainable leaves (per
    ``labels``; all leaves when None) are finite.
    """
    weights = jnp.asarray(class_weights, jnp.float32)
    dropout = model.cfg.drop_rate > 0
    trainable_mask = None if labels is None else [lab == TRAINABLE for lab in jax.tree.leaves(labels)]
    base_rng = jax.random.PRNGKey(seed)

    def forward(params, x, lengths, rng=None):
        rngs = {"dropout": rng} if rng is not None else {}
        kwargs = dict(deterministic=rng is None, rngs=rngs, start=start)
        if pooled_only:
            index = pool_positions(lengths, x.shape[1], pool)
            return model.apply({"params": params}, x, pool_index=index, **kwargs)
        return pool_logits(model.apply({"params": params}, x, **kwargs), lengths, pool)

    def train_step(params, opt_state, x, lengths, labels, step):
        rng = jax.random.fold_in(base_rng, step) if dropout else None

        def loss_fn(p):
            logits = forward(p, x, lengths, rng)
            return weighted_cross_entropy(logits, labels, weights), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        correct = jnp.sum(jnp.argmax(logits, -1) == labels)
        return params, opt_state, loss, correct, _all_finite(loss, grads)

    def _all_finite(loss, grads):
        leaves = jax.tree.leaves(grads)
        if trainable_mask is not None:
            leaves = [g for g, keep in zip(leaves, trainable_mask) if keep]
        return jnp.all(jnp.stack([jnp.isfinite(loss)] + [jnp.isfinite(g).all() for g in leaves]))

    def eval_step(params, x, lengths, labels):
        logits = forward(params, x, lengths)
        return per_example_nll(logits, labels), weights[labels], jnp.argmax(logits, -1)

    return Steps(jax.jit(train_step, donate_argnums=(0, 1)), jax.jit(eval_step))


def batch_width(lengths: np.ndarray, full: int, bucketed: bool) -> int:
    return bucket_length(int(lengths.max()), full) if bucketed else full


def evaluate(steps: Steps, params, x: np.ndarray, data: Encoded, batch_size: int,
             bucketed: bool = False, desc: str = "eval") -> dict:
    """Metrics on all of ``data`` (model inputs ``x``); the last batch is padded to full
    size by repeating rows. Bucketed: messages go in length order, so batches are short."""
    n = len(data)
    order = np.argsort(data.lengths, kind="stable") if bucketed else np.arange(n)
    outputs = []
    for i in tqdm(range(0, n, batch_size), desc=desc, leave=False, unit="batch", disable=None):
        idx = order[i:i + batch_size]
        rows = np.resize(idx, batch_size)
        width = batch_width(data.lengths[rows], x.shape[1], bucketed)
        outputs.append((idx, steps.eval(params, x[rows, :width], data.lengths[rows],
                                        data.labels[rows])))
    nll, w, preds = (np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.int64))
    for idx, out in outputs:  # read back only after every batch is queued
        for acc, value in zip((nll, w, preds), out):
            acc[idx] = np.asarray(value)[: len(idx)]
    loss = float(np.sum(w * nll) / np.sum(w))
    return classification_metrics(data.labels, preds, loss)


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient."""

    def __init__(self, step: int, epoch: int):
        self.step, self.epoch = step, epoch
        super().__init__(f"loss or gradients not finite at step {step} (epoch {epoch}); "
                         "training stopped. A lower --lr, or class weights that are not "
                         "extreme, usually avoid this.")


def fit(model: GPTModel, params, data: dict[str, Encoded], cfg: TrainConfig,
        class_weights: np.ndarray, trainable: tuple[str, ...],
        on_epoch: Callable[[list[dict]], None] | None = None, log: Callable[[str], None] = print,
        checkpoints: EpochCheckpoints | None = None, resume: bool = False,
        on_step: Callable[[int], None] | None = None):
    """Train for ``cfg.epochs`` and evaluate every split after each epoch.

    Returns ``(params, history)``; ``history[e]`` holds the epoch's mean training-step
    loss and accuracy, each split's metrics, and timings (epoch 1 also the time of the
    one-off frozen-prefix pass). ``on_epoch(history)`` runs after each epoch, once its
    state is in ``checkpoints`` (when given); ``resume`` first restores the latest
    epoch saved there. ``on_step(step)`` runs after each step is queued.
    """
    labels = trainable_labels(params, trainable)
    tx = make_optimizer(labels, cfg.lr, cfg.weight_decay)
    opt_state = tx.init(params)
    train = data["train"]
    trains = {name for name, label in named_leaves(labels).items() if label == TRAINABLE}
    fingerprints = run_fingerprints(params, trains, train.ids, train.labels)
    history, step, first_epoch = [], 0, 1
    saved = checkpoints.resume(params, opt_state, trains, fingerprints) \
        if resume and checkpoints is not None else None
    if saved is not None:
        params, opt_state, meta = saved
        history, step, first_epoch = meta["history"], meta["step"], meta["epoch"] + 1
        log(f"resuming after epoch {meta['epoch']} (step {step}) from {checkpoints.directory}")

    n_layers = model.cfg.n_layers
    start = first_trainable_block(labels, n_layers) if cfg.cache_prefix else 0
    if start and model.cfg.drop_rate > 0:
        log("dropout is on, so the frozen blocks are not a fixed function: no prefix cache")
        start = 0
    bucketed = cfg.buckets and cfg.pool == "last-real"
    steps = make_steps(model, tx, cfg.pool, class_weights, cfg.seed, start=start,
                       pooled_only=cfg.pooled_only, labels=labels)
    inputs = {name: split.ids for name, split in data.items()}
    prefix_seconds = 0.0
    if start and first_epoch <= cfg.epochs:
        t0 = time.perf_counter()
        log(f"computing the frozen blocks h0..h{start - 1} once per message "
            f"({cfg.prefix_dtype or 'float32'})")
        inputs = {name: cached_prefix(cfg.prefix_cache_dir, model.cfg, params, split.ids,
                                      split.lengths, start, bucketed=bucketed,
                                      matmul_dtype=cfg.prefix_dtype, desc=f"prefix {name}",
                                      log=log)
                  for name, split in data.items()}
        prefix_seconds = time.perf_counter() - t0
        log(f"prefix computed in {prefix_seconds:.1f} s")
    x_train = inputs["train"]
    for epoch in range(first_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        batches = epoch_order(len(train), cfg.batch_size, cfg.seed, epoch)
        losses, correct = [], []
        bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="step", leave=False,
                   disable=None)
        pending = None  # (step, finite flag) of the step before: read while this one runs
        for i, idx in enumerate(bar):
            width = batch_width(train.lengths[idx], x_train.shape[1], bucketed)
            params, opt_state, loss, right, finite = steps.train(
                params, opt_state, x_train[idx, :width], train.lengths[idx], train.labels[idx],
                np.int32(step))
            if pending is not None and not bool(pending[1]):
                raise NonFiniteError(pending[0], epoch)
            pending = (step, finite)
            losses.append(loss)
            correct.append(right)
            step += 1
            if on_step is not None:
                on_step(step)
            if bar.disable is False and i % 10 == 0:
                bar.set_postfix(loss=f"{float(loss):.4f}")
        if pending is not None and not bool(pending[1]):
            raise NonFiniteError(pending[0], epoch)
        losses, correct = jax.device_get((losses, correct))
        record = {
            "epoch": epoch,
            "step": step,
            "train_step_loss": float(np.mean(losses)) if losses else float("nan"),
            "train_step_accuracy": (float(np.sum(correct)) / (len(batches) * cfg.batch_size)
                                    if batches else float("nan")),
            "train_seconds": time.perf_counter() - t0,
        }
        if epoch == first_epoch:
            record["prefix_seconds"] = prefix_seconds  # the one-off pass, before this epoch
        t0 = time.perf_counter()
        for name, split in data.items():
            if len(split):
                record[name] = evaluate(steps, params, inputs[name], split, cfg.batch_size,
                                        bucketed, desc=f"eval {name}")
        record["eval_seconds"] = time.perf_counter() - t0
        history.append(record)
        if checkpoints is not None:
            checkpoints.save_epoch(epoch, params, opt_state, trains, {
                "epoch": epoch, "step": step, "seed": cfg.seed, "history": history,
                **fingerprints,
                "random_state": "batch order drawn from (seed, epoch), dropout keys from "
                                "(seed, step): nothing else to save"})
        if on_epoch is not None:
            on_epoch(history)
    return params, history
