"""Fine-tuning core: what trains, the optimizer, the loss, one jitted step, one epoch.

Freezing is data, decided once: ``Partition.from_patterns(params, patterns)`` matches
regular expressions against slash-joined parameter names (``h11/attn/c_attn/kernel``)
and splits the tree into a *trainable* and a *frozen* tree. The step differentiates
only the trainable tree (so no gradient flows into frozen blocks, and the optimizer
holds state for trainable leaves only); the frozen tree is an ordinary argument.

    partition = Partition.from_patterns(params, resolve_trainable(("auto",), n_layers))
    trainer = Trainer(model, tx, weights, pool=..., seed=..., start=...)
    state = trainer.init(partition.trainable(params))
    state, metrics = trainer.train_step(state, partition.frozen(params), batch)

The state and the batch are plain pytrees, so a later sharding of them over a device
mesh adds shardings to these jits and leaves the loop as it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gpt2_jax.data.batches import bucket_length
from gpt2_jax.data.encoding import Encoded, epoch_order
from gpt2_jax.model.gpt import GPTModel
from gpt2_jax.model.pooling import classify
from gpt2_jax.parallel.mesh import Placement, replicated, to_host, tree_shardings
from gpt2_jax.training.loss import example_weights, per_example_nll, weighted_cross_entropy
from gpt2_jax.training.metrics import classification_metrics
from gpt2_jax.training.multilabel import (
    exact_sets,
    multilabel_loss,
    multilabel_metrics,
    per_example_bce,
)
from gpt2_jax.training.partition import merge
from gpt2_jax.training.progress import Progress, wait_ready
from gpt2_jax.training.selection import best_epoch, epoch_score  # noqa: F401  (re-exported)
from gpt2_jax.util.tree import same_keys

logger = logging.getLogger(__name__)

# after an epoch's training pass: (the first step's number, {"loss": [...], "grad_norm": [...]})
StepValuesHook = Callable[[int, dict[str, np.ndarray]], None]

ESTIMATE_AFTER = 10  # passes of this many batches or more estimate their time early
LOUD_SECONDS = 30.0  # training and evaluation passes shorter than this log no progress


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar: steps taken (dropout keys are folded from it)
    trainable: Any  # nested dict of the trainable leaves
    opt_state: Any


class SelectedState(NamedTuple):
    """What a checkpoint holds when an epoch is selected on validation: the
    ``TrainState`` fields and the trainable leaves of the best epoch so far."""

    step: jax.Array
    trainable: Any
    opt_state: Any
    best: Any


class Batch(NamedTuple):
    x: Any  # token ids [B, T] int32, or hidden states entering block `start` [B, T, E]
    lengths: Any  # [B] real tokens per row
    labels: Any  # [B] class ids


class Trainer:
    """The jitted steps of one fine-tuning setup.

    ``train_step(state, frozen, batch) -> (state, metrics)`` with metrics ``loss``,
    ``correct`` (predictions right in the batch), ``finite`` (loss and every
    gradient finite) and ``grad_norm`` (the global norm of the batch's gradients);
    ``eval_step(trainable, frozen, batch) -> (nll [B], weight [B], class ids [B])``, or
    with several labels per text ``(bce [B], ones [B], probabilities [B, K])``.
    ``start=k``: inputs are the hidden states entering block k (the frozen prefix
    computed once); ``pooled_only``: the last block computes only the pooled position
    (exact).
    """

    def __init__(
        self,
        model: GPTModel,
        tx: optax.GradientTransformation,
        class_weights: np.ndarray,
        *,
        pool: str,
        seed: int,
        start: int = 0,
        pooled_only: bool = True,
        ignore_index: int | None = None,
        placement: Placement | None = None,
        multi_label: bool = False,
    ):
        self.model, self.tx, self.pool, self.start = model, tx, pool, start
        # several labels per text: labels [B, K] 0/1, sigmoid + BCE, class_weights the
        # per-label positive weights (training.multilabel)
        self.multi_label = multi_label
        self.ignore_index = ignore_index
        self.pooled_only = pooled_only
        self.placement = placement  # None: one device, arrays where JAX puts them
        self.weights = jnp.asarray(class_weights, jnp.float32)
        self.base_rng = jax.random.PRNGKey(seed)
        self.train_step = jax.jit(self._train_step, donate_argnums=0)
        self.eval_step = jax.jit(self._eval_step)

    def init(self, trainable, frozen) -> TrainState:
        """The state at step 0. The optimizer is given the whole tree (``tx`` is normally
        ``freeze(...)``, which keeps state for the trainable leaves only)."""
        opt_state = self.tx.init(merge(trainable, frozen))
        return self.place(TrainState(jnp.zeros((), jnp.int32), trainable, opt_state))

    def place(self, tree):
        """``tree`` (a state, the frozen leaves) laid out on the mesh; as it is without one."""
        return tree if self.placement is None else self.placement.tree(tree)

    def batch(self, x, lengths, labels) -> Batch:
        """A batch from host arrays, its rows spread over the mesh's devices."""
        if self.placement is None:
            return Batch(x, lengths, labels)
        return Batch(*self.placement.batch(x, lengths, labels))

    def rows(self, x, data: Encoded, idx: np.ndarray, bucketed: bool) -> Batch:
        """The batch of rows ``idx`` of ``data`` (model inputs ``x``), cut to the
        bucket of its longest text when ``bucketed``."""
        width = batch_width(data.lengths[idx], x.shape[1], bucketed)
        return self.batch(x[idx, :width], data.lengths[idx], data.labels[idx])

    def eval_order(self, data: Encoded, bucketed: bool) -> np.ndarray:
        """The order evaluation takes the rows in: by length when bucketed."""
        return np.argsort(data.lengths, kind="stable") if bucketed else np.arange(len(data))

    def _gathered(self, params):
        """Inside a step: the weights whole on every device while they are used (their
        pieces are gathered over fsdp), so the activations stay split by batch rows. The
        gradients come out whole too (all-reduced), and the updated state is cut again
        by ``_keep_layout``. Left to itself, XLA may instead gather the activations to
        the weights' layout, which costs far more memory (178 against 39.5 GiB per
        device for 1558M on fsdp=8, see step_memory)."""
        if self.placement is None or self.placement.mesh.shape["fsdp"] == 1:
            return params
        return jax.lax.with_sharding_constraint(params, replicated(self.placement.mesh))

    def _keep_layout(self, tree):
        """Inside the step: outputs keep the layout of the inputs (by shape, as placed)."""
        if self.placement is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, tree_shardings(self.placement.mesh, tree))

    def logits(self, params, batch: Batch, rng=None):
        """[B, C] at the pooled position; dropout on when ``rng`` is given."""
        return classify(
            self.model,
            params,
            batch.x,
            batch.lengths,
            self.pool,
            pooled_only=self.pooled_only,
            deterministic=rng is None,
            start=self.start,
            rngs={} if rng is None else {"dropout": rng},
        )

    def _train_step(self, state: TrainState, frozen, batch: Batch):
        dropout = self.model.cfg.drop_rate > 0
        rng = jax.random.fold_in(self.base_rng, state.step) if dropout else None

        def loss_fn(trainable):
            logits = self.logits(self._gathered(merge(trainable, frozen)), batch, rng)
            if self.multi_label:
                return multilabel_loss(logits, batch.labels, self.weights), logits
            return weighted_cross_entropy(
                logits, batch.labels, self.weights, self.ignore_index
            ), logits

        # no backward pass through the frozen leaves: gradients of the trainable ones only
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.trainable)
        # the optimizer sees the whole tree; the frozen leaves' zeros go to set_to_zero
        # and their updates are dropped below, so XLA computes neither
        whole = merge(grads, jax.tree.map(jnp.zeros_like, frozen))
        updates, opt_state = self.tx.update(whole, state.opt_state, merge(state.trainable, frozen))
        trainable = optax.apply_updates(state.trainable, same_keys(updates, state.trainable))
        finite = jnp.all(
            jnp.stack(
                [jnp.isfinite(loss)] + [jnp.isfinite(g).all() for g in jax.tree.leaves(grads)]
            )
        )
        correct = (
            exact_sets(logits, batch.labels)
            if self.multi_label
            else jnp.sum(jnp.argmax(logits, -1) == batch.labels)
        )
        metrics = {
            "loss": loss,
            "correct": correct,
            "finite": finite,
            "grad_norm": optax.global_norm(grads),  # of this batch's gradients, unclipped
        }
        return self._keep_layout(TrainState(state.step + 1, trainable, opt_state)), metrics

    def _eval_step(self, trainable, frozen, batch: Batch):
        logits = self.logits(self._gathered(merge(trainable, frozen)), batch)
        if self.multi_label:  # loss [B], weight [B], probabilities [B, K]
            bce = per_example_bce(logits, batch.labels, self.weights)
            return bce, jnp.ones_like(bce), jax.nn.sigmoid(logits)
        return (
            per_example_nll(logits, batch.labels),
            example_weights(batch.labels, self.weights, self.ignore_index),
            jnp.argmax(logits, -1),
        )


def batch_width(lengths: np.ndarray, full: int, bucketed: bool) -> int:
    return bucket_length(int(lengths.max()), full) if bucketed else full


def evaluate(
    trainer: Trainer,
    trainable,
    frozen,
    x: np.ndarray,
    data: Encoded,
    batch_size: int,
    class_names: tuple[str, ...],
    bucketed: bool = False,
    desc: str = "eval",
) -> dict:
    """Metrics on all of ``data`` (model inputs ``x``); the last batch is padded to full
    size by repeating rows. Bucketed: messages go in length order, so batches are short."""
    n = len(data)
    order = trainer.eval_order(data, bucketed)
    outputs = []
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        batch = trainer.rows(x, data, np.resize(idx, batch_size), bucketed)
        outputs.append((idx, trainer.eval_step(trainable, frozen, batch)))
    nll, w = np.zeros(n, np.float32), np.zeros(n, np.float32)
    k = len(class_names)  # several labels: the probabilities [N, K] of each label
    preds = np.zeros((n, k), np.float32) if trainer.multi_label else np.zeros(n, np.int64)
    accumulators: tuple[np.ndarray, ...] = (nll, w, preds)
    progress = _progress(len(outputs), desc)  # counts batches as they are read back
    for idx, out in outputs:  # read back only after every batch is queued
        for acc, value in zip(accumulators, out):
            acc[idx] = to_host(wait_ready(value))[: len(idx)]
        progress.done()
    progress.close()
    loss = float(np.sum(w * nll) / np.sum(w))
    if trainer.multi_label:
        return multilabel_metrics(data.labels, preds, loss, class_names)
    return classification_metrics(data.labels, preds, loss, class_names)


def _progress(total: int, desc: str, **units) -> Progress:
    """Progress of a training or evaluation pass: a bar on a terminal; in a log, an
    estimate and a line each tenth only for passes that take ``LOUD_SECONDS`` or more."""
    return Progress(
        total,
        desc,
        log=logger.info,
        estimate_after=ESTIMATE_AFTER,
        quiet_below=LOUD_SECONDS,
        **units,
    )


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient."""

    def __init__(self, step: int, epoch: int):
        self.step, self.epoch = step, epoch
        super().__init__(
            f"loss or gradients not finite at step {step} (epoch {epoch}); "
            "training stopped. A lower --lr, or class weights that are not "
            "extreme, usually avoid this."
        )


def train_epoch(
    trainer: Trainer,
    state: TrainState,
    frozen,
    x: np.ndarray,
    data: Encoded,
    batch_size: int,
    seed: int,
    epoch: int,
    *,
    bucketed: bool = False,
    desc: str = "epoch",
    on_step: Callable[[int], None] | None = None,
    on_step_values: StepValuesHook | None = None,
) -> tuple[TrainState, dict]:
    """One pass over ``data`` in the batch order of ``(seed, epoch)`` (the incomplete
    last batch dropped). Returns the new state and the epoch's mean step loss and
    accuracy. Raises ``NonFiniteError`` naming the first step whose loss or gradients
    are not finite (the flag is read one step late, so the device never waits).
    ``on_step_values(first, values)``: once, after the pass, each step's ``loss`` and
    ``grad_norm`` (arrays; entry i is step ``first + i``), read back together."""
    batches = epoch_order(len(data), batch_size, seed, epoch)
    losses, correct, norms, pending = [], [], [], None
    # a step counts as done when its finiteness flag is read (one step late)
    progress = _progress(len(batches), desc, unit="step", units="steps")
    bar = progress.bar
    for i, idx in enumerate(batches):
        step = int(state.step) if pending is None else pending[0] + 1
        state, metrics = trainer.train_step(state, frozen, trainer.rows(x, data, idx, bucketed))
        if pending is not None:
            _check_finite(pending, epoch, progress)
        pending = (step, metrics["finite"])
        losses.append(metrics["loss"])
        correct.append(metrics["correct"])
        norms.append(metrics["grad_norm"])
        if on_step is not None:
            on_step(step + 1)
        if bar.disable is False and i % 10 == 0:
            bar.set_postfix(loss=f"{float(metrics['loss']):.4f}")
    if pending is not None:
        _check_finite(pending, epoch, progress)
    progress.close()
    losses, correct, norms = jax.device_get((losses, correct, norms))
    if on_step_values is not None and batches:
        first = int(state.step) - len(batches) + 1
        on_step_values(first, {"loss": np.asarray(losses), "grad_norm": np.asarray(norms)})
    return state, {
        "train_step_loss": float(np.mean(losses)) if losses else float("nan"),
        "train_step_accuracy": (
            float(np.sum(correct)) / (len(batches) * batch_size) if batches else float("nan")
        ),
    }


def _check_finite(pending: tuple[int, Any], epoch: int, progress: Progress) -> None:
    """Wait for step ``pending[0]`` (in short sleeps: a stop is handled at once), count
    it done, and raise ``NonFiniteError`` if its loss or gradients are not finite."""
    step, finite = pending
    if not bool(wait_ready(finite)):
        raise NonFiniteError(step, epoch)
    progress.done()


def fit(
    trainer: Trainer,
    state: TrainState,
    frozen,
    inputs: dict[str, np.ndarray],
    data: dict[str, Encoded],
    class_names: tuple[str, ...],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    bucketed: bool = False,
    first_epoch: int = 1,
    history: list[dict] | None = None,
    on_epoch: Callable[[TrainState, list[dict]], bool | None] | None = None,
    on_step: Callable[[int], None] | None = None,
    on_step_values: StepValuesHook | None = None,
) -> tuple[TrainState, list[dict]]:
    """Train epochs ``first_epoch .. epochs``; after each, evaluate every split of
    ``data`` (model inputs ``inputs``) and call ``on_epoch(state, history)`` (where the
    caller saves checkpoints and reports; a true return value stops training, e.g. early
    stopping). ``history[e]``: the epoch's mean step loss and accuracy, each split's
    metrics, timings. ``on_step``, ``on_step_values``: as in ``train_epoch``."""
    history = list(history or [])
    for epoch in range(first_epoch, epochs + 1):
        t0 = began = time.perf_counter()
        state, record = train_epoch(
            trainer, state, frozen, inputs["train"], data["train"], batch_size, seed, epoch,
            bucketed=bucketed, desc=f"epoch {epoch}/{epochs}", on_step=on_step,
            on_step_values=on_step_values,
        )  # fmt: skip
        record = {
            "epoch": epoch,
            "step": int(state.step),
            **record,
            "train_seconds": time.perf_counter() - t0,
        }
        t0 = time.perf_counter()
        for name, split in data.items():
            if len(split):
                record[name] = evaluate(
                    trainer, state.trainable, frozen, inputs[name], split, batch_size,
                    class_names, bucketed, desc=f"eval {name}",
                )  # fmt: skip
        record["eval_seconds"] = time.perf_counter() - t0
        history.append(record)
        if on_epoch is not None and on_epoch(state, history):
            break
        if epoch < epochs:
            _say_time_left(epoch, epochs, time.perf_counter() - began)
    return state, history


def _say_time_left(epoch: int, epochs: int, took: float) -> None:
    """The epochs after ``epoch`` cost what it did (after the first, which compiles, an
    upper bound)."""
    left = epochs - epoch
    which = f"epochs {epoch + 1}-{epochs}" if left > 1 else f"epoch {epochs}"
    logger.info(
        f"epoch {epoch} took {took:.0f} s in all; about {took * left:.0f} s left for {which}"
    )
