"""The optimizer: AdamW with its schedule, clipping and accumulation for the trainable leaves, behind optax.multi_transform for the whole tree."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import optax

from gpt2_jax.training.config import TrainConfig
from gpt2_jax.training.partition import FROZEN, TRAINABLE
from gpt2_jax.util.tree import Params


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
    rate = learning_rate_schedule(lr, schedule, warmup_steps, updates)
    tx = optax.adamw(rate, weight_decay=weight_decay)
    if clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
    if accumulation_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accumulation_steps)
    return tx


def learning_rate_schedule(
    lr: float, schedule: str = "constant", warmup_steps: int = 0, updates: int | None = None
) -> optax.ScalarOrSchedule:
    """The learning rate of each optimizer update (a number when it is constant): ``lr``
    after a linear warm-up over ``warmup_steps`` updates, then constant or decaying
    (linearly or along a cosine) to 0 at update ``updates``."""
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
    return rate


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
    return make_optimizer(
        tc.lr,
        tc.weight_decay,
        schedule=tc.lr_schedule,
        warmup_steps=tc.warmup_steps,
        updates=_updates(tc, n_train),
        clip_norm=tc.clip_norm,
        accumulation_steps=tc.accumulation_steps,
    )


def _updates(tc: TrainConfig, n_train: int) -> int:
    """The optimizer updates of the whole run (at least 1)."""
    steps = (n_train // tc.batch_size) * tc.epochs
    return max(1, steps // tc.accumulation_steps)


def step_learning_rates(tc: TrainConfig, n_train: int, steps: np.ndarray) -> np.ndarray:
    """The learning rate ``optimizer_for(tc, n_train)`` uses at each of ``steps`` (batches
    counted from 1, as ``TrainState.step`` after them): with ``accumulation_steps`` k,
    the rate of the update that step's gradients go into (update ``(step - 1) // k``)."""
    rate = learning_rate_schedule(tc.lr, tc.lr_schedule, tc.warmup_steps, _updates(tc, n_train))
    updates = (np.asarray(steps, np.int64) - 1) // tc.accumulation_steps
    if not callable(rate):
        return np.full(updates.shape, rate, np.float64)
    return np.asarray(rate(updates), np.float64)
