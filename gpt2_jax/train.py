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
from .tree import named_leaves, named_tree_map

TRAINABLE, FROZEN = "trainable", "frozen"
POOLS = ("last", "last-real")


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


def weighted_cross_entropy(logits, labels, weights):
    """Mean of ``w[y] * nll`` divided by the mean of ``w[y]`` (PyTorch's weighted mean)."""
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
    w = weights[labels]
    return jnp.sum(w * nll) / jnp.sum(w)


def pool_logits(logits, lengths, pool: str):
    """[B, T, C] -> [B, C]: the last position ("last", the lab's) or the last real token."""
    if pool == "last":
        return logits[:, -1, :]
    index = jnp.maximum(lengths - 1, 0)
    return jnp.take_along_axis(logits, index[:, None, None], axis=1)[:, 0, :]


@dataclasses.dataclass
class Steps:
    train: Callable
    eval: Callable


def make_steps(model: GPTModel, tx: optax.GradientTransformation, pool: str,
               class_weights: np.ndarray, seed: int) -> Steps:
    """``train(params, opt_state, ids, lengths, labels, step) -> (params, opt_state, loss, correct)``
    and ``eval(params, ids, lengths, labels) -> (per-example weighted nll, weights, preds)``."""
    weights = jnp.asarray(class_weights, jnp.float32)
    dropout = model.cfg.drop_rate > 0
    base_rng = jax.random.PRNGKey(seed)

    def forward(params, ids, lengths, rng=None):
        rngs = {"dropout": rng} if rng is not None else {}
        logits = model.apply({"params": params}, ids, deterministic=rng is None, rngs=rngs)
        return pool_logits(logits, lengths, pool)

    def train_step(params, opt_state, ids, lengths, labels, step):
        rng = jax.random.fold_in(base_rng, step) if dropout else None

        def loss_fn(p):
            logits = forward(p, ids, lengths, rng)
            return weighted_cross_entropy(logits, labels, weights), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        correct = jnp.sum(jnp.argmax(logits, -1) == labels)
        return params, opt_state, loss, correct

    def eval_step(params, ids, lengths, labels):
        logits = forward(params, ids, lengths)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
        return nll, weights[labels], jnp.argmax(logits, -1)

    return Steps(jax.jit(train_step, donate_argnums=(0, 1)), jax.jit(eval_step))


def evaluate(steps: Steps, params, data: Encoded, batch_size: int, desc: str = "eval") -> dict:
    """Metrics on all of ``data``; the last batch is padded to full size (one compile)."""
    nll, w, preds = [], [], []
    batches = epoch_order(len(data), batch_size, 0, 0, shuffle=False, drop_last=False)
    for idx in tqdm(batches, desc=desc, leave=False, unit="batch", disable=None):
        full = np.resize(idx, batch_size)  # repeat rows to fill; sliced off below
        out = steps.eval(params, data.ids[full], data.lengths[full], data.labels[full])
        for acc, value in zip((nll, w, preds), out):
            acc.append(np.asarray(value)[: len(idx)])
    nll, w, preds = (np.concatenate(a) for a in (nll, w, preds))
    loss = float(np.sum(w * nll) / np.sum(w))
    return classification_metrics(data.labels, preds, loss)


def fit(model: GPTModel, params, data: dict[str, Encoded], cfg: TrainConfig,
        class_weights: np.ndarray, trainable: tuple[str, ...],
        on_epoch: Callable[[dict], None] | None = None, log: Callable[[str], None] = print):
    """Train for ``cfg.epochs`` and evaluate every split after each epoch.

    Returns ``(params, history)``; ``history[e]`` holds the epoch's mean training-step
    loss and accuracy, each split's metrics, and timings.
    """
    labels = trainable_labels(params, trainable)
    tx = make_optimizer(labels, cfg.lr, cfg.weight_decay)
    opt_state = tx.init(params)
    steps = make_steps(model, tx, cfg.pool, class_weights, cfg.seed)
    train = data["train"]
    history, step = [], 0
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        batches = epoch_order(len(train), cfg.batch_size, cfg.seed, epoch)
        losses, correct = [], []
        bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="step", leave=False, disable=None)
        for i, idx in enumerate(bar):
            params, opt_state, loss, right = steps.train(
                params, opt_state, train.ids[idx], train.lengths[idx], train.labels[idx],
                np.int32(step))
            losses.append(loss)
            correct.append(right)
            step += 1
            if i % 10 == 0:
                bar.set_postfix(loss=f"{float(loss):.4f}")
        train_seconds = time.perf_counter() - start
        record = {
            "epoch": epoch,
            "step": step,
            "train_step_loss": float(np.mean(jax.device_get(losses))) if losses else float("nan"),
            "train_step_accuracy": (float(np.sum(jax.device_get(correct)))
                                    / (len(batches) * cfg.batch_size)) if batches else float("nan"),
            "train_seconds": train_seconds,
        }
        start = time.perf_counter()
        for name, split in data.items():
            if len(split):
                record[name] = evaluate(steps, params, split, cfg.batch_size, desc=f"eval {name}")
        record["eval_seconds"] = time.perf_counter() - start
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return params, history

