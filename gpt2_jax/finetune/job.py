"""The training job: what it is given (checked once, before any weight is loaded), the jitted steps for it, and the loop with its prefix pass, epoch checkpoints and hooks."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gpt2_jax.data.encoding import Encoded
from gpt2_jax.finetune.config import SpeedConfig
from gpt2_jax.model.gpt import GPTModel
from gpt2_jax.model.pooling import reads_padding
from gpt2_jax.parallel.distributed import several
from gpt2_jax.parallel.mesh import Placement, describe
from gpt2_jax.training.checkpoints import (
    EpochCheckpoints,
    Restored,
    run_fingerprints,
)
from gpt2_jax.training.chunked import ChunkTrainer
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.training.optim import freeze, optimizer_for
from gpt2_jax.training.partition import Partition, merge
from gpt2_jax.training.prefix_cache import prefix_inputs
from gpt2_jax.training.train import (
    SelectedState,
    StepValuesHook,
    Trainer,
    TrainState,
    best_epoch,
    fit,
)
from gpt2_jax.util.machine import cpu_lacks_bfloat16

logger = logging.getLogger(__name__)


def check_schedule(tc: TrainConfig, batches: int, n_val: int) -> None:
    """Refuse, before anything heavy, training settings that cannot work with this data
    (``batches`` per epoch, ``n_val`` validation rows); note what they imply."""
    k = tc.accumulation_steps
    if k > batches:
        raise ValueError(
            f"--accumulation-steps {k} is more than the {batches} batches of an "
            f"epoch; use at most {batches} (or a smaller --batch-size)"
        )
    updates = tc.epochs * batches // k
    if tc.warmup_steps and tc.warmup_steps >= updates:
        raise ValueError(
            f"--warmup-steps {tc.warmup_steps} is not below the run's {updates} "
            f"optimizer updates ({tc.epochs} epochs x {batches} batches / "
            f"{k} accumulated): the learning rate would never reach --lr"
        )
    if tc.select_by != "last" and not n_val:
        raise ValueError(
            f"--select-by {tc.select_by} needs a validation split: give "
            "--val-size > 0 or --val-file"
        )
    fitted = [flag for flag, on in (("--calibrate", tc.calibrate),
              ("--decision-threshold", tc.decision_threshold)) if on]  # fmt: skip
    if fitted and not n_val:
        raise ValueError(
            f"{' and '.join(fitted)} fit(s) on the validation split: give --val-size > 0 "
            "or --val-file"
        )


def check_mesh(speed: SpeedConfig, tc: TrainConfig) -> Placement | None:
    """The run's placement on the devices (None: one device), after checking that the
    mesh fits the devices and the batch splits over them."""
    placement = speed.placement()
    if placement is not None and tc.batch_size % placement.rows:
        raise ValueError(
            f"--batch-size {tc.batch_size} cannot be split over the mesh's "
            f"{placement.rows} devices ({describe(placement.mesh)}); use a "
            f"multiple of {placement.rows}"
        )
    return placement


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingPlan:
    """What training is given apart from the weights: the encoded splits (``{"train":
    Encoded, "val": ..., "test": ...}``), the class names and loss weights, the training
    and speed settings and the pool. Checked once, when made, before any weight is
    loaded: an epoch has steps, the schedule fits them, the mesh fits the batch."""

    encoded: dict[str, Encoded]
    classes: tuple[str, ...]
    train: TrainConfig
    speed: SpeedConfig
    pool: str
    class_weights: np.ndarray
    chunk_pool: str | None = None  # --long-texts chunk: mean or max of a text's chunks
    placement: Placement | None = dataclasses.field(init=False, default=None)

    def __post_init__(self):
        n_train, tc = len(self.encoded["train"]), self.train
        if self.batches == 0:
            raise ValueError(
                f"{n_train} training rows < batch size {tc.batch_size}: "
                "an epoch would have no steps; use more training rows or a smaller "
                "--batch-size"
            )
        check_schedule(tc, self.batches, len(self.encoded.get("val", ())))
        if tc.decision_threshold is not None and len(self.classes) != 2:
            raise ValueError(
                f"--decision-threshold is for two classes (a threshold on the second one's "
                f"probability); this data has {len(self.classes)}"
            )
        object.__setattr__(self, "placement", check_mesh(self.speed, tc))

    @property
    def batches(self) -> int:
        """Optimizer batches per epoch (the incomplete last batch is dropped)."""
        return len(self.encoded["train"]) // self.train.batch_size


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingJob:
    """A plan and the model it trains: the network and the partition of its parameter
    tree into what trains and what stays frozen (decided once, by ``Partition``)."""

    plan: TrainingPlan
    model: GPTModel
    partition: Partition


@dataclasses.dataclass(frozen=True)
class Hooks:
    """What the loop calls: ``on_epoch(history)`` after each epoch is evaluated (and
    checkpointed), ``on_step(step)`` after each optimizer step, ``on_resume(restored)``
    once, when a resumed run has read its last epoch's state, ``on_step_values(first,
    values)`` after each epoch's training pass with its steps' losses and gradient norms
    (``train_epoch``)."""

    on_epoch: Callable[[list[dict]], None] | None = None
    on_step: Callable[[int], None] | None = None
    on_resume: Callable[[Restored], None] | None = None
    on_step_values: StepValuesHook | None = None


def warn_slow_bfloat16(speed: SpeedConfig) -> None:
    """Say once, in the run's log, that bfloat16 matmuls will be slower, not faster, on
    a CPU without bfloat16 units (x86 without avx512_bf16 or amx_bf16)."""
    flags = [
        f"--{name.replace('_', '-')} bfloat16"
        for name in ("prefix_dtype", "train_dtype")
        if getattr(speed, name) == "bfloat16"
    ]
    if flags and jax.default_backend() == "cpu" and cpu_lacks_bfloat16():
        logger.warning(
            f"WARNING: {' and '.join(flags)}: this CPU has no bfloat16 units (no avx512_bf16 or "
            "amx_bf16 among its flags), so bfloat16 matmuls are emulated and the run will "
            "be slower here than with float32, not faster"
        )


def build_trainer(job: TrainingJob) -> Trainer:
    """The jitted steps for this job; ``trainer.start`` is the first block computed per
    step (the blocks before it are the frozen prefix, computed once per text)."""
    plan, model, partition = job.plan, job.model, job.partition
    tc, speed = plan.train, plan.speed
    start = partition.first_block(model.cfg.n_layers) if speed.prefix_cache else 0
    if start and model.cfg.drop_rate > 0:
        logger.info("dropout is on, so the frozen blocks are not a fixed function: no prefix cache")
        start = 0
    placement = plan.placement
    if placement is not None:
        logger.info(f"mesh: {describe(placement.mesh)}")
    warn_slow_bfloat16(speed)
    computed = dataclasses.replace(
        model.cfg,
        attention=speed.attention,
        matmul_dtype=None if speed.train_dtype == "float32" else speed.train_dtype,
    )
    if computed != model.cfg:
        model = GPTModel(computed)
    chunked = {} if plan.chunk_pool is None else {"how": plan.chunk_pool}
    return (Trainer if plan.chunk_pool is None else ChunkTrainer)(
        model,
        freeze(optimizer_for(tc, len(plan.encoded["train"])), partition.labels),
        plan.class_weights,
        pool=plan.pool,
        seed=tc.seed,
        start=start,
        pooled_only=speed.pooled_only,
        ignore_index=tc.ignore_index,
        placement=placement,
        **chunked,
    )


# A little over 60 lines: it only wires the named pieces together (partition, trainer,
# restore, prefix pass, _EpochEnd, fit), in the order a reader follows them.
def train_classifier(
    job: TrainingJob,
    params,
    *,
    checkpoints: EpochCheckpoints | None = None,
    resume: bool = False,
    prefix_disk_dir: Path | None = None,
    hooks: Hooks = Hooks(),
) -> tuple[dict, list[dict]]:
    """Fine-tune ``params`` (the parameter tree with its class head) as ``job`` says and
    evaluate every split after each epoch.

    Puts the pieces together: the partition into trainable and frozen trees, the
    inputs (token ids, or the frozen prefix computed once), the jitted steps, epoch
    checkpoints (``resume``: first restore the latest), the loop. Returns the trained
    parameter tree of the epoch ``tc.select_by`` picks (``best_epoch``) and the history
    (the first epoch trained in this call also holds ``prefix_seconds``)."""
    plan, cfg, partition = job.plan, job.model.cfg, job.partition
    encoded, tc, speed = plan.encoded, plan.train, plan.speed
    frozen, trainable = partition.frozen(params), partition.trainable(params)
    del params
    trainer = build_trainer(job)
    start, bucketed = trainer.start, speed.buckets and not reads_padding(plan.pool, cfg.causal)
    state, frozen = trainer.init(trainable, frozen), trainer.place(frozen)
    select = tc.select_by != "last"
    best = state.trainable if select else None  # the best epoch's trainable leaves so far
    fingerprints = run_fingerprints(frozen, encoded["train"].ids, encoded["train"].labels)
    history: list[dict] = []
    first_epoch = 1
    if resume and checkpoints:
        state, best, history, first_epoch = _restore(
            job, trainer, checkpoints, state, best, fingerprints, hooks
        )
    inputs = {name: split.ids for name, split in encoded.items()}
    prefix_seconds = 0.0
    if start and first_epoch <= tc.epochs:
        t0 = time.perf_counter()
        inputs = _prefix_pass(job, trainer, merge(frozen, trainable), bucketed, prefix_disk_dir)
        prefix_seconds = time.perf_counter() - t0
        logger.info(f"prefix computed in {prefix_seconds:.1f} s")

    after_epoch = _EpochEnd(
        job, checkpoints, hooks, fingerprints, first_epoch, prefix_seconds, best
    )
    state, history = fit(
        trainer,
        state,
        frozen,
        inputs,
        encoded,
        plan.classes,
        epochs=tc.epochs,
        batch_size=tc.batch_size,
        seed=tc.seed,
        bucketed=bucketed,
        first_epoch=first_epoch,
        history=history,
        on_epoch=after_epoch,
        on_step=hooks.on_step,
        on_step_values=hooks.on_step_values,
    )
    kept = after_epoch.best if select else state.trainable
    assert kept is not None  # with select, best is set from the first epoch on
    return merge(frozen, kept), history


@dataclasses.dataclass
class _EpochEnd:
    """What follows each epoch's evaluation: keep the best epoch's trainable leaves (with
    ``--select-by``), checkpoint, call ``hooks.on_epoch``, and say whether to stop early
    (the loop's ``on_epoch``; a true return stops it)."""

    job: TrainingJob
    checkpoints: EpochCheckpoints | None
    hooks: Hooks
    fingerprints: dict
    first_epoch: int
    prefix_seconds: float  # the one-off pass, recorded with the first epoch after it
    best: Any  # the best epoch's trainable leaves so far (None without --select-by)

    def __call__(self, state: TrainState, history: list[dict]) -> bool:
        tc = self.job.plan.train
        select = tc.select_by != "last"
        epoch = history[-1]["epoch"]
        if epoch == self.first_epoch:
            history[-1]["prefix_seconds"] = self.prefix_seconds
        chosen = best_epoch(history, tc.select_by)
        if select and chosen == epoch:
            self.best = jax.tree.map(jnp.copy, state.trainable)  # the step donates the original
        if self.checkpoints is not None:
            self._save(epoch, state, history)
        if self.hooks.on_epoch is not None:
            self.hooks.on_epoch(history)
        if tc.patience and epoch - chosen >= tc.patience:
            logger.info(
                f"stopping early: no better {tc.select_by} than epoch {chosen}'s for "
                f"{tc.patience} epoch(s)"
            )
            return True
        return False

    def _save(self, epoch: int, state: TrainState, history: list[dict]) -> None:
        tc = self.job.plan.train
        assert self.checkpoints is not None
        self.checkpoints.save(
            epoch,
            SelectedState(*state, self.best) if tc.select_by != "last" else state,
            {
                "epoch": epoch,
                "step": int(state.step),
                "seed": tc.seed,
                "history": history,
                **self.fingerprints,
                "random_state": "batch order drawn from (seed, epoch), dropout keys from "
                "(seed, step): nothing else to save",
            },
        )


def _restore(job, trainer, checkpoints, state, best, fingerprints, hooks):
    """Resuming: the last good epoch's ``(state, best, history, first_epoch)``, or what
    was given when no epoch was saved. (The pieces of ``train_classifier``, handed on.)"""
    tc = job.plan.train
    select = tc.select_by != "last"
    restored = checkpoints.resume(SelectedState(*state, best) if select else state, fingerprints)
    if restored is None:
        return state, best, [], 1
    if hooks.on_resume is not None:
        hooks.on_resume(restored)
    state, history = trainer.place(TrainState(*restored.state[:3])), restored.meta["history"]
    best = trainer.place(restored.state.best) if select else None
    first_epoch = restored.meta["epoch"] + 1
    logger.info(
        f"resuming after epoch {restored.meta['epoch']} (step {restored.meta['step']}) "
        f"from {checkpoints.directory}"
    )
    if (
        tc.patience
        and history
        and (history[-1]["epoch"] - best_epoch(history, tc.select_by) >= tc.patience)
    ):
        first_epoch = tc.epochs + 1  # it had stopped early: nothing more to train
        logger.info("the run had stopped early at that epoch: keeping its choice")
    return state, best, history, first_epoch


def _prefix_pass(job, trainer, params, bucketed, disk_dir) -> dict:
    """The frozen blocks' outputs for every split, computed once per text (or read back
    from the prefix cache): the inputs of every training step and evaluation."""
    speed, start = job.plan.speed, trainer.start
    logger.info(
        f"computing the frozen blocks h0..h{start - 1} once per text ({speed.prefix_dtype}); "
        "the first batch compiles, then a time estimate follows"
    )
    cache_dir = speed.prefix_cache_dir
    if cache_dir is not None and several():
        logger.info(
            "--prefix-cache-dir is not used with several processes (each would decide on "
            "its own whether to reuse it); the prefix is computed"
        )
        cache_dir = None
    return prefix_inputs(
        dataclasses.replace(job.model.cfg, attention=speed.attention),
        params,
        job.plan.encoded,
        start,
        bucketed=bucketed,
        matmul_dtype=speed.matmul_dtype(),
        cache_dir=cache_dir,
        disk_dir=disk_dir,
        placement=trainer.placement,
    )
