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

import dataclasses
import math
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from gpt2_jax.data.batches import bucket_length
from gpt2_jax.data.tables import Encoded, epoch_order
from gpt2_jax.model.gpt import GPTModel
from gpt2_jax.model.pooling import classify
from gpt2_jax.parallel.mesh import Placement, replicated, to_host, tree_shardings
from gpt2_jax.training.metrics import classification_metrics
from gpt2_jax.util.tree import Params, count_params, named_leaves, path_name, same_keys, subtree

# Words accepted among --trainable patterns; anything else is a regular expression.
TRAINABLE_PRESETS = {
    "last_layer": "the class head only",
    "last_block": "the last transformer block, the final LayerNorm and the head (the lab's)",
    "last_two_blocks": "the last two blocks, the final LayerNorm and the head",
    "all": "every parameter",
    "lora": "the LoRA adapters (--lora-rank) and the head",
    "auto": "last_block with pretrained weights, all with random ones",
}
LR_SCHEDULES = ("constant", "linear", "cosine")
LORA_PATTERN = ".*/lora_[ab]"  # the adapters' leaves (model.Linear)
SELECT_BY = ("last", "val_loss", "val_accuracy", "val_macro_f1")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training policy: what trains, how, for how long."""

    batch_size: int = dataclasses.field(default=16, metadata={"help": "examples per step"})
    epochs: int = dataclasses.field(default=4, metadata={"help": "passes over the training split"})
    lr: float = dataclasses.field(default=5e-5, metadata={"help": "AdamW learning rate"})
    weight_decay: float = dataclasses.field(default=0.1, metadata={"help": "AdamW weight decay"})
    seed: int = dataclasses.field(
        default=123,
        metadata={"help": "shuffle, head init, batch order, dropout; same seed, same results"},
    )
    trainable: tuple[str, ...] = dataclasses.field(
        default=("auto",),
        metadata={
            "help": "what trains: a preset (" + ", ".join(TRAINABLE_PRESETS) + ") or regular "
            "expressions over parameter names such as 'h11/.*' (repeat the flag)",
            "metavar": "PRESET|REGEX",
        },
    )
    class_weights: str = dataclasses.field(
        default="balanced",
        metadata={
            "help": "balanced: n/(k*count_c) from the training labels; none; or per class by "
            "name, e.g. 'ham=1,spam=3.5'",
            "metavar": "balanced|none|NAME=W,...",
        },
    )
    accumulation_steps: int = dataclasses.field(
        default=1,
        metadata={
            "metavar": "K",
            "help": "average the gradients of this many batches per optimizer update (each "
            "batch's loss is its own weighted mean, as in the book); batches left over at the "
            "end of an epoch count towards the next epoch's first update",
        },
    )
    lr_schedule: str = dataclasses.field(
        default="constant",
        metadata={
            "choices": LR_SCHEDULES,
            "help": "learning rate after warm-up: constant, or decaying "
            "to 0 at the last update (linear, cosine)",
        },
    )
    warmup_steps: int = dataclasses.field(
        default=0,
        metadata={
            "metavar": "N",
            "help": "optimizer updates with the learning rate rising linearly from 0",
        },
    )
    clip_norm: float = dataclasses.field(
        default=0.0,
        metadata={"metavar": "NORM", "help": "clip gradients to this global norm (0: no clipping)"},
    )
    select_by: str = dataclasses.field(
        default="last",
        metadata={
            "choices": SELECT_BY,
            "help": "which epoch's weights the classifier keeps: the last, "
            "or the best on the validation split by this metric (the test split never chooses)",
        },
    )
    ignore_index: int | None = dataclasses.field(
        default=None,
        metadata={
            "parse": int,
            "metavar": "ID",
            "help": "leave examples of this class id out of the "
            "loss (the book's row 18 passes 50256, which is no class id: no effect)",
        },
    )
    patience: int = dataclasses.field(
        default=0,
        metadata={
            "metavar": "EPOCHS",
            "help": "with --select-by: stop after this many epochs without a better validation "
            "metric (0: train every epoch)",
        },
    )

    def __post_init__(self):
        # the Python API's natural forms: one preset or pattern, weights as a dict
        if isinstance(self.trainable, str):
            object.__setattr__(self, "trainable", (self.trainable,))
        elif isinstance(self.trainable, list):
            object.__setattr__(self, "trainable", tuple(self.trainable))
        if isinstance(self.class_weights, dict):
            object.__setattr__(
                self,
                "class_weights",
                ",".join(f"{name}={weight}" for name, weight in self.class_weights.items()),
            )
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay}")
        if not self.trainable:
            raise ValueError("trainable needs at least one preset or pattern")
        resolve_trainable(self.trainable, 1)  # raises on an invalid regular expression
        if self.class_weights not in ("balanced", "none"):
            parse_class_weights(self.class_weights)  # raises on a malformed spec
        if self.accumulation_steps < 1:
            raise ValueError(f"accumulation_steps must be >= 1, got {self.accumulation_steps}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not (math.isfinite(self.clip_norm) and self.clip_norm >= 0):
            raise ValueError(f"clip_norm must be a number >= 0 (0: off), got {self.clip_norm}")
        if self.select_by not in SELECT_BY:
            raise ValueError(f"select_by must be one of {SELECT_BY}, got {self.select_by!r}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if self.patience and self.select_by == "last":
            raise ValueError(
                "patience needs a validation metric to watch: set select_by "
                "(--select-by val_loss, val_accuracy or val_macro_f1)"
            )


def parse_class_weights(spec: str) -> dict[str, float]:
    """``"ham=1,spam=3.5"`` -> ``{"ham": 1.0, "spam": 3.5}``."""
    out = {}
    for item in spec.split(","):
        name, eq, value = item.rpartition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if not eq or not name or weight is None or not (math.isfinite(weight) and weight > 0):
            raise ValueError(
                f"class weights {spec!r}: expected 'balanced', 'none' or "
                f"NAME=POSITIVE_NUMBER pairs separated by commas (at {item!r})"
            )
        out[name] = weight
    return out


def class_weights_for(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``n / (k * count_c)``: each class contributes equally to the loss."""
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        raise ValueError(
            f"training labels lack class(es) {np.flatnonzero(counts == 0).tolist()}; "
            f"cannot weight classes (counts {counts.tolist()})"
        )
    return (len(labels) / (num_classes * counts)).astype(np.float32)


def class_weights(spec: str, labels: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray:
    """The loss weight of each class [k] from ``TrainConfig.class_weights``."""
    k = len(class_names)
    if spec == "balanced":
        return class_weights_for(labels, k)
    if spec == "none":
        return np.ones(k, np.float32)
    given = parse_class_weights(spec)
    unknown = sorted(set(given) - set(class_names))
    missing = [c for c in class_names if c not in given]
    if unknown or missing:
        raise ValueError(
            f"class weights {spec!r}: "
            + "; ".join(
                ([f"no class named {unknown}"] if unknown else [])
                + ([f"no weight for {missing}"] if missing else [])
            )
            + f" (classes: {list(class_names)})"
        )
    return np.asarray([given[c] for c in class_names], np.float32)


def resolve_trainable(
    items: Iterable[str], n_layers: int, pretrained: bool = True
) -> tuple[str, ...]:
    """Presets expanded to regular expressions over parameter names."""
    out = []
    for item in items:
        if item == "auto":
            item = "last_block" if pretrained else "all"
        if item == "last_layer":
            out.append("head/.*")
        elif item == "last_block":
            out += [f"h{n_layers - 1}/.*", "ln_f/.*", "head/.*"]
        elif item == "last_two_blocks":
            out += [f"h{max(0, n_layers - 2)}/.*", f"h{n_layers - 1}/.*", "ln_f/.*", "head/.*"]
        elif item == "all":
            out.append(".*")
        elif item == "lora":
            out += [LORA_PATTERN, "head/.*"]
        else:
            try:
                re.compile(item)
            except re.error as err:
                raise ValueError(
                    f"--trainable {item!r} is neither a preset "
                    f"({', '.join(TRAINABLE_PRESETS)}) nor a valid regular "
                    f"expression: {err}"
                ) from None
            out.append(item)
    return tuple(dict.fromkeys(out))


@dataclasses.dataclass(frozen=True)
class Partition:
    """Which leaves train. Everything that depends on that choice asks this object."""

    patterns: tuple[str, ...]
    names: frozenset[str]  # slash-joined names of the trainable leaves
    counts: dict[str, int]  # parameters: {"trainable": ..., "frozen": ...}

    @classmethod
    def from_patterns(cls, params, patterns: Iterable[str]) -> Partition:
        patterns = tuple(patterns)
        compiled = [re.compile(p) for p in patterns]
        leaves = named_leaves(params)
        unused = [p for p, c in zip(patterns, compiled) if not any(c.fullmatch(n) for n in leaves)]
        if unused:
            tops = sorted({n.split("/")[0] for n in leaves}, key=lambda s: (len(s), s))
            raise ValueError(
                f"trainable pattern(s) {unused} match no parameter; names look like "
                f"{next(iter(leaves))!r}, top-level scopes are {tops}"
            )
        names = frozenset(n for n in leaves if any(c.fullmatch(n) for c in compiled))
        n_train = sum(int(np.prod(leaves[n].shape)) for n in names)
        return cls(
            patterns, names, {"trainable": n_train, "frozen": count_params(params) - n_train}
        )

    def trainable(self, params: Params) -> Params:
        return subtree(params, self.names.__contains__)

    def frozen(self, params: Params) -> Params:
        return subtree(params, lambda n: n not in self.names)

    def labels(self, params: Params) -> Params:
        """``params``'s structure with ``"trainable"`` or ``"frozen"`` at every leaf: the
        label tree ``optax.multi_transform`` reads (see ``freeze``)."""
        return jax.tree_util.tree_map_with_path(
            lambda path, _: TRAINABLE if path_name(path) in self.names else FROZEN, params
        )

    def first_block(self, n_layers: int) -> int:
        """Index of the first block with a trainable leaf (``n_layers`` if none; 0 when
        an embedding trains, since then nothing before block 0 is fixed either)."""
        first = n_layers
        for name in self.names:
            top = name.split("/")[0]
            if top in ("wte", "wpe"):
                return 0
            if top.startswith("h") and top[1:].isdigit():
                first = min(first, int(top[1:]))
        return first


def merge(a: dict, b: dict) -> dict:
    """The union of two disjoint nested dicts (e.g. trainable and frozen trees)."""
    out = dict(a)
    for key, value in b.items():
        out[key] = merge(out[key], value) if key in out else value
    return out


def make_optimizer(
    lr: float,
    weight_decay: float,
    *,
    schedule: str = "constant",
    warmup_steps: int = 0,
    updates: int | None = None,
    clip_norm: float = 0.0,
    accumulation_steps: int = 1,
) -> optax.GradientTransformation:
    """AdamW, as in the lab, for the trainable leaves (``freeze`` puts it in front of the
    whole tree). Optional: a learning
    rate warm-up over ``warmup_steps`` updates and a decay to 0 at update ``updates``,
    clipping by global norm, and ``accumulation_steps`` batches per update (their
    gradients averaged, ``optax.MultiSteps``)."""
    if schedule != "constant" and not updates:
        raise ValueError(f"a {schedule} learning-rate schedule needs the number of updates")
    if schedule == "constant":
        rate = (
            lr
            if not warmup_steps
            else optax.join_schedules(
                [optax.linear_schedule(0.0, lr, warmup_steps), optax.constant_schedule(lr)],
                [warmup_steps],
            )
        )
    elif schedule == "cosine":
        assert updates is not None  # a schedule without updates raised above
        rate = optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, max(updates, 1), 0.0)
    else:
        assert updates is not None  # a schedule without updates raised above
        rate = optax.join_schedules(
            [
                optax.linear_schedule(0.0, lr, warmup_steps),
                optax.linear_schedule(lr, 0.0, max(1, updates - warmup_steps)),
            ],
            [warmup_steps],
        )
    tx = optax.adamw(rate, weight_decay=weight_decay)
    if clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
    if accumulation_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accumulation_steps)
    return tx


TRAINABLE, FROZEN = "trainable", "frozen"


def freeze(
    inner: optax.GradientTransformation, labels: Callable[[Params], Params]
) -> optax.GradientTransformation:
    """The optimizer of the whole parameter tree, and the one place where freezing meets
    it: ``inner`` (AdamW with its schedule, clipping and accumulation) on the leaves
    ``labels`` (normally ``Partition.labels``) calls trainable, ``optax.set_to_zero()``
    on the frozen ones, which therefore carry no optimizer state (no Adam moments, no
    accumulated gradients). ``Trainer`` computes gradients for the trainable leaves only
    and hands the frozen label zeros that nothing reads, so XLA drops them."""
    return optax.multi_transform({TRAINABLE: inner, FROZEN: optax.set_to_zero()}, labels)


def optimizer_for(tc: TrainConfig, n_train: int) -> optax.GradientTransformation:
    """``make_optimizer`` for this training policy and ``n_train`` training examples."""
    steps = (n_train // tc.batch_size) * tc.epochs
    return make_optimizer(
        tc.lr,
        tc.weight_decay,
        schedule=tc.lr_schedule,
        warmup_steps=tc.warmup_steps,
        updates=max(1, steps // tc.accumulation_steps),
        clip_norm=tc.clip_norm,
        accumulation_steps=tc.accumulation_steps,
    )


def per_example_nll(logits, labels):
    """[B, C], [B] -> [B]: -log softmax(logits)[label]."""
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]


def example_weights(labels, weights, ignore_index: int | None = None):
    """[B]: each example's class weight; 0 for label ``ignore_index``."""
    w = weights[jnp.clip(labels, 0, weights.shape[0] - 1)]
    return w if ignore_index is None else jnp.where(labels == ignore_index, 0.0, w)


def weighted_cross_entropy(logits, labels, weights, ignore_index: int | None = None):
    """Mean of ``w[y] * nll`` divided by the mean of ``w[y]`` (PyTorch's weighted mean);
    examples of class ``ignore_index`` count for nothing (0 if all are ignored)."""
    nll = per_example_nll(logits, jnp.clip(labels, 0, logits.shape[-1] - 1))
    w = example_weights(labels, weights, ignore_index)
    return jnp.sum(w * nll) / jnp.maximum(jnp.sum(w), jnp.finfo(jnp.float32).tiny)


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


def epoch_score(record: dict, by: str) -> float:
    """``record["val"]["loss"]`` for ``by="val_loss"``, and so on."""
    split, metric = by.split("_", 1)
    return float(record[split][metric])


def best_epoch(history: list[dict], by: str) -> int:
    """The epoch the classifier keeps: the last (``by="last"``), or the one with the best
    validation ``by`` (lowest loss, highest accuracy or macro-F1; the earliest of equals;
    NaN never wins, and if every value is NaN the last epoch)."""
    if by == "last" or not history:
        return history[-1]["epoch"] if history else 0
    lower = by.endswith("loss")
    best = None
    for record in history:
        value = epoch_score(record, by)
        if math.isnan(value):
            continue
        if best is None or (value < best[1] if lower else value > best[1]):
            best = (record["epoch"], value)
    return history[-1]["epoch"] if best is None else best[0]


class Batch(NamedTuple):
    x: Any  # token ids [B, T] int32, or hidden states entering block `start` [B, T, E]
    lengths: Any  # [B] real tokens per row
    labels: Any  # [B] class ids


class Trainer:
    """The jitted steps of one fine-tuning setup.

    ``train_step(state, frozen, batch) -> (state, metrics)`` with metrics ``loss``,
    ``correct`` (predictions right in the batch) and ``finite`` (loss and every
    gradient finite); ``eval_step(trainable, frozen, batch) -> (nll [B], weight [B],
    preds [B])``. ``start=k``: inputs are the hidden states entering block k (the
    frozen prefix computed once); ``pooled_only``: the last block computes only the
    pooled position (exact).
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
    ):
        self.model, self.tx, self.pool, self.start = model, tx, pool, start
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
        metrics = {
            "loss": loss,
            "correct": jnp.sum(jnp.argmax(logits, -1) == batch.labels),
            "finite": finite,
        }
        return self._keep_layout(TrainState(state.step + 1, trainable, opt_state)), metrics

    def _eval_step(self, trainable, frozen, batch: Batch):
        logits = self.logits(self._gathered(merge(trainable, frozen)), batch)
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
    order = np.argsort(data.lengths, kind="stable") if bucketed else np.arange(n)
    outputs = []
    for i in tqdm(range(0, n, batch_size), desc=desc, leave=False, unit="batch", disable=None):
        idx = order[i : i + batch_size]
        rows = np.resize(idx, batch_size)
        width = batch_width(data.lengths[rows], x.shape[1], bucketed)
        batch = trainer.batch(x[rows, :width], data.lengths[rows], data.labels[rows])
        outputs.append((idx, trainer.eval_step(trainable, frozen, batch)))
    nll, w, preds = (np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.int64))
    accumulators: tuple[np.ndarray, ...] = (nll, w, preds)
    for idx, out in outputs:  # read back only after every batch is queued
        for acc, value in zip(accumulators, out):
            acc[idx] = to_host(value)[: len(idx)]
    loss = float(np.sum(w * nll) / np.sum(w))
    return classification_metrics(data.labels, preds, loss, class_names)


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
) -> tuple[TrainState, dict]:
    """One pass over ``data`` in the batch order of ``(seed, epoch)`` (the incomplete
    last batch dropped). Returns the new state and the epoch's mean step loss and
    accuracy. Raises ``NonFiniteError`` naming the first step whose loss or gradients
    are not finite (the flag is read one step late, so the device never waits)."""
    batches = epoch_order(len(data), batch_size, seed, epoch)
    losses, correct, pending = [], [], None
    bar = tqdm(batches, desc=desc, unit="step", leave=False, disable=None)
    for i, idx in enumerate(bar):
        width = batch_width(data.lengths[idx], x.shape[1], bucketed)
        step = int(state.step) if pending is None else pending[0] + 1
        state, metrics = trainer.train_step(
            state, frozen, trainer.batch(x[idx, :width], data.lengths[idx], data.labels[idx])
        )
        if pending is not None and not bool(pending[1]):
            raise NonFiniteError(pending[0], epoch)
        pending = (step, metrics["finite"])
        losses.append(metrics["loss"])
        correct.append(metrics["correct"])
        if on_step is not None:
            on_step(step + 1)
        if bar.disable is False and i % 10 == 0:
            bar.set_postfix(loss=f"{float(metrics['loss']):.4f}")
    if pending is not None and not bool(pending[1]):
        raise NonFiniteError(pending[0], epoch)
    losses, correct = jax.device_get((losses, correct))
    return state, {
        "train_step_loss": float(np.mean(losses)) if losses else float("nan"),
        "train_step_accuracy": (
            float(np.sum(correct)) / (len(batches) * batch_size) if batches else float("nan")
        ),
    }


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
    on_epoch: Callable[[TrainState, list[dict]], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[TrainState, list[dict]]:
    """Train epochs ``first_epoch .. epochs``; after each, evaluate every split of
    ``data`` (model inputs ``inputs``) and call ``on_epoch(state, history)`` (where the
    caller saves checkpoints and reports; a true return value stops training, e.g. early
    stopping). ``history[e]``: the epoch's mean step loss and accuracy, each split's
    metrics, timings."""
    history = list(history or [])
    for epoch in range(first_epoch, epochs + 1):
        t0 = time.perf_counter()
        state, record = train_epoch(
            trainer,
            state,
            frozen,
            inputs["train"],
            data["train"],
            batch_size,
            seed,
            epoch,
            bucketed=bucketed,
            desc=f"epoch {epoch}/{epochs}",
            on_step=on_step,
        )
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
                    trainer,
                    state.trainable,
                    frozen,
                    inputs[name],
                    split,
                    batch_size,
                    class_names,
                    bucketed,
                    desc=f"eval {name}",
                )
        record["eval_seconds"] = time.perf_counter() - t0
        history.append(record)
        if on_epoch is not None and on_epoch(state, history):
            break
    return state, history
