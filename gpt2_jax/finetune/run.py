"""A fine-tuning run end to end: GPT-2 + labelled text -> classifier + report in a run folder.

``run(RunConfig(...))`` is what ``python -m experiments.spam`` (the lab: its defaults)
and ``python -m experiments.finetune`` (your own data) call. Every command-line flag is
a field of one of the config dataclasses below (``gpt2_jax.finetune.cli`` makes the flags from
them), so each setting is written once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from gpt2_jax.classifier.classifier import ClassifierConfig, save_classifier, with_class_head
from gpt2_jax.finetune.config import RunConfig
from gpt2_jax.finetune.decisions import Decisions, fit_decisions
from gpt2_jax.finetune.examples import pick_examples, write_examples
from gpt2_jax.finetune.fingerprints import check_unchanged, input_fingerprints
from gpt2_jax.finetune.folder import NoLock, RunFolderLock, prepare_run_dir
from gpt2_jax.finetune.inputs import Inputs, describe_inputs, read_inputs
from gpt2_jax.finetune.job import Hooks, TrainingJob, train_classifier
from gpt2_jax.finetune.multilabel import fit_thresholds, pick_label_examples
from gpt2_jax.finetune.record import METRICS_FILE, RunRecord, Selected
from gpt2_jax.finetune.recording import recording_hooks
from gpt2_jax.finetune.report import plot_history, write_json
from gpt2_jax.finetune.stops import record_stop, sigterm_as_interrupt
from gpt2_jax.finetune.tracking import Tracking, need_trackers, open_tracking
from gpt2_jax.model.gpt import GPTModel, merge_lora
from gpt2_jax.parallel.distributed import is_main, several, share_outcome
from gpt2_jax.training.checkpoints import (
    CHECKPOINTS_DIR,
    EpochCheckpoints,
)
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.training.memory import (
    GIB,
    available_bytes,
    estimate_peak_bytes,
    memory_check,
    peak_memory_bytes,
)
from gpt2_jax.training.partition import Partition
from gpt2_jax.training.train import best_epoch, epoch_score
from gpt2_jax.util.compile_clock import CompileClock
from gpt2_jax.util.logs import RUN_LOG, run_log
from gpt2_jax.util.machine import run_machine
from gpt2_jax.weights.openai import load_weights
from gpt2_jax.weights.pretrained import load_pretrained

logger = logging.getLogger(__name__)


def resume_config(run_dir: str | os.PathLike) -> RunConfig:
    """The configuration an earlier run in ``run_dir`` started with."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: --resume takes the folder of a run that was started earlier"
        )
    try:
        record = RunRecord.read(path)
    except ValueError as err:
        raise ValueError(f"{err}; cannot resume from it") from None
    if record.config is None:
        raise ValueError(
            f"{path}: not the metrics.json of a run (no config); cannot resume from it"
        )
    if record.status == "finished":
        raise ValueError(f"{run_dir}: that run finished already; nothing to resume")
    cfg = RunConfig.from_dict(record.config)
    return dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, run_dir=str(run_dir)))


def _prefix_storage(cfg: RunConfig, settings: dict, n_texts: int, length: int) -> str:
    """``memory`` or ``disk`` for the frozen-prefix outputs, said in the log."""
    s = cfg.speed
    if not s.prefix_cache or s.prefix_storage != "auto":
        return s.prefix_storage if s.prefix_storage != "auto" else "memory"
    need = estimate_peak_bytes(settings, n_texts, length, True)
    budget = (
        available_bytes()
        if s.memory_budget_gib == "available"
        else float(s.memory_budget_gib) * GIB
    )
    if budget is not None and need > budget:
        logger.info(
            f"prefix outputs on disk (memory-mapped): the estimated peak {need / GIB:.1f} GiB "
            f"exceeds the budget {budget / GIB:.1f} GiB"
        )
        return "disk"
    return "memory"


def claim_folder(cfg: RunConfig, resume: bool, main: bool) -> tuple[Path, RunFolderLock | NoLock]:
    """Step 2: the run folder, locked by process 0; every process learns whether that
    worked (a failure on 0 stops the others too)."""
    lock: RunFolderLock | NoLock
    try:
        if main:
            run_dir, lock = prepare_run_dir(cfg, resume)
        else:
            assert cfg.output.run_dir is not None  # run() checks: several processes need it
            run_dir, lock = Path(cfg.output.run_dir).resolve(), NoLock()
    except BaseException:
        share_outcome(False, "prepare the run folder")
        raise
    share_outcome(True, "prepare the run folder")
    return run_dir, lock


def load_backbone(cfg: RunConfig, inputs: Inputs) -> tuple[Any, dict, TrainingJob]:
    """Step 4: GPT-2's weights (or a random init) with a new class head, and the job:
    ``(params, settings as read, job)``."""
    m, tc = cfg.model, cfg.train
    settings, pretrained = inputs.settings, None
    if m.weights == "pretrained":
        logger.info(f"loading GPT-2 from {inputs.model_dir}")
        settings, pretrained = load_pretrained(inputs.model_dir)
        logger.info(f"params keys: {list(pretrained)} ({len(pretrained['blocks'])} blocks)")
    has_pretrained = pretrained is not None
    params, from_init = with_class_head(
        load_weights(pretrained) if pretrained is not None else None, inputs.model_cfg, tc.seed
    )
    del pretrained  # the NumPy copy: from here on only the JAX tree holds the weights
    if has_pretrained:
        logger.info(f"from the checkpoint: all but {from_init} (new, seeded init)")
    partition = Partition.from_patterns(params, inputs.patterns)
    counts = partition.counts
    logger.info(
        f"trainable patterns {list(inputs.patterns)}: {counts['trainable']:,} trainable / "
        f"{counts['frozen']:,} frozen parameters (total {sum(counts.values()):,})"
    )
    weights = inputs.plan.class_weights
    logger.info(
        ("label positive weights: " if inputs.plan.multi_label else "class weights: ")
        + ", ".join(f"{c} {w:.4f}" for c, w in zip(inputs.plan.classes, weights))
    )
    return params, settings, TrainingJob(inputs.plan, GPTModel(inputs.model_cfg), partition)


def start_record(
    cfg: RunConfig, inputs: Inputs, settings: dict, job: TrainingJob, run_dir: Path, **known
) -> RunRecord:
    """Step 5: the record of a run that trains (``known``: ``backbone``, ``fingerprints``, ``data``,
    ``prefix_storage``), carrying on an earlier record when resuming."""
    return RunRecord(
        run_dir=str(run_dir),
        config=cfg.to_dict(),
        seed=cfg.train.seed,
        settings=settings,
        model_config=dataclasses.asdict(inputs.model_cfg),
        trainable_patterns=list(inputs.patterns),
        parameters=job.partition.counts,
        class_weights=inputs.plan.class_weights.tolist(),
        backend=jax.default_backend(),
        machine=run_machine(jax.devices()),
        **known,
    )


def select_epoch(report: RunRecord, tc: TrainConfig) -> int:
    """Step 7: the epoch whose weights the classifier keeps (``--select-by``), recorded."""
    chosen = best_epoch(report.epochs, tc.select_by)
    report.selected = Selected(chosen, tc.select_by)
    if tc.select_by != "last":
        report.selected.value = epoch_score(report.epochs[chosen - 1], tc.select_by)
        logger.info(
            f"the classifier keeps epoch {chosen}: best {tc.select_by} {report.selected.value:.4f}"
        )
    report.stopped_early = report.epochs[-1]["epoch"] < tc.epochs
    return chosen


def save(
    cfg: RunConfig, inputs: Inputs, params, run_dir: Path, decisions: Decisions | None = None
) -> None:
    """Step 8: the classifier (LoRA folded in with ``--merge-lora``; the temperature and
    threshold fitted on validation, if any), its tokenizer, and a few validation texts per
    class for the served page."""
    model_cfg = inputs.model_cfg
    if cfg.output.merge_lora and model_cfg.lora_rank:
        params, model_cfg = merge_lora(params, model_cfg)
        logger.info("LoRA adapters folded into the weights of the saved classifier")
    spec = ClassifierConfig(
        model=model_cfg,
        labels=inputs.plan.classes,
        pool=cfg.model.pool,
        max_length=inputs.length,
        truncate=cfg.data.truncate,
        temperature=decisions.temperature if decisions is not None else 1.0,
        threshold=decisions.threshold if decisions is not None else None,
        chunking=inputs.chunking,
        multi_label=inputs.plan.multi_label,
        thresholds=decisions.thresholds if decisions is not None else None,
    )
    save_classifier(run_dir, params, spec, bpe_dir=inputs.model_dir)
    if is_main():
        pick = pick_label_examples if inputs.plan.multi_label else pick_examples
        write_examples(run_dir, pick(inputs.labelled.splits, inputs.plan.classes))


def run(
    cfg: RunConfig,
    log: Callable[[str], None] | None = None,
    *,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
    on_epoch: Callable[[list[dict]], None] | None = None,
) -> dict:
    """Fine-tune and evaluate; returns the contents of ``metrics.json``. ``resume``:
    go on from the last epoch saved in ``cfg.output.run_dir`` (see ``resume_config``).
    ``log``: a callable that gets each message instead of the terminal (default: the
    ``gpt2_jax`` loggers, shown on stdout unless the application configured logging); the
    run folder's ``run.log`` keeps a copy either way. ``on_step(step)`` after each
    optimizer step; ``on_epoch(history)`` after each epoch is recorded (an exception it
    raises stops the run, recorded as stopped, like any failure).

    The steps: read the inputs, claim the folder, describe the inputs, (a dry run stops
    there), load the backbone, start the record, train, select an epoch, save, finish."""
    started = time.perf_counter()
    main = is_main()  # with several processes, only process 0 writes the run folder and logs
    if several() and cfg.output.run_dir is None:  # checked by every process alike
        raise ValueError(
            "with several processes give --run-dir (on a file system every "
            "host sees): the default name holds the time, which differs"
        )
    need_trackers(cfg.output.log_to)
    with CompileClock() as clock:  # what JAX spends making programs, for the record
        inputs = read_inputs(cfg)
        run_dir, lock = claim_folder(cfg, resume, main)
        stop_on_sigterm = sigterm_as_interrupt()
        try:
            n_train = len(inputs.plan.encoded["train"])
            with (
                run_log(run_dir / RUN_LOG if main else None, log, main),
                open_tracking(cfg, run_dir, n_train, resume) as tracking,
            ):
                here = RunContext(cfg, inputs, run_dir, main, resume, tracking)
                hooks = Hooks(on_epoch=on_epoch, on_step=on_step)
                return _steps(here, started, hooks, clock)
        finally:
            lock.release()
            stop_on_sigterm()


def _steps(here: RunContext, started: float, caller: Hooks, clock: CompileClock) -> dict:
    """``run``'s steps once its folder is claimed: describe the inputs (a dry run stops
    there), load the backbone, start the record, train, select, save, finish."""
    cfg, inputs, run_dir, main = here.cfg, here.inputs, here.run_dir, here.main
    data_info = describe_inputs(cfg, inputs, run_dir, here.resume)
    n_texts = sum(len(split.ids) for split in inputs.plan.encoded.values())  # rows: chunks
    logger.info(memory_check(inputs.settings, n_texts, inputs.length, cfg.speed.prefix_cache))
    storage = _prefix_storage(cfg, inputs.settings, n_texts, inputs.length)
    backbone: dict[str, Any] = {"folder": str(inputs.model_dir)}
    if inputs.random_seed is not None:
        backbone["random_weights_seed"] = inputs.random_seed
    if cfg.model.hf_repo:
        backbone.update(hf_repo=cfg.model.hf_repo, hf_commit=inputs.model_dir.name)
    if cfg.train.epochs == 0:  # a dry run: the data and the plan, no weights, no classifier
        return dry_run(here, backbone, data_info)
    fingerprints = fingerprint_inputs(here)
    params, settings, job = load_backbone(cfg, inputs)
    report = start_record(
        cfg,
        inputs,
        settings,
        job,
        run_dir,
        backbone=backbone,
        fingerprints=fingerprints,
        data=data_info,
        prefix_storage=storage,
    )
    params = train_select_save(here, job, params, report, caller)
    report.status = "finished"
    report.total_seconds = time.perf_counter() - started
    report.peak_memory_gib = peak_memory_bytes() / GIB
    making = clock.time()
    if making is not None:
        report.compile_seconds = making.to_dict()
        logger.info(making.line(report.total_seconds))
    if main:
        write_json(run_dir / METRICS_FILE, report.to_dict())
    logger.info(
        f"done in {report.total_seconds:.1f} s (peak memory {report.peak_memory_gib:.2f} "
        f"GiB); metrics.json, plots and the classifier are in {run_dir}"
    )
    return report.to_dict()


def dry_run(here: RunContext, backbone: dict, data_info: dict) -> dict:
    """``--epochs 0``: the record of the data and the plan; no weights, no classifier."""
    report = RunRecord(
        run_dir=str(here.run_dir),
        config=here.cfg.to_dict(),
        settings=here.inputs.settings,
        backbone=backbone,
        data=data_info,
        status="checked: --epochs 0 reads and splits the data only; nothing "
        "was trained and no classifier was saved",
    )
    if here.main:
        write_json(here.run_dir / METRICS_FILE, report.to_dict())
    logger.info(report.status)
    return report.to_dict()


def fingerprint_inputs(here: RunContext) -> dict:
    """Step 4a: fingerprints of the data files, the backbone's files and the config.
    Resuming, the run stops here, naming each input that changed since it started."""
    files, model_dir = here.inputs.labelled.files, here.inputs.model_dir
    known = here.inputs.labelled.sums
    if not here.resume:
        return input_fingerprints(files, model_dir, here.cfg.to_dict(), known)
    before = RunRecord.read(here.run_dir / METRICS_FILE)
    now = input_fingerprints(files, model_dir, before.config or {}, known)
    check_unchanged(before.fingerprints, now, here.run_dir)
    return now


@dataclasses.dataclass(frozen=True, eq=False)
class RunContext:
    """Where a run is, for the steps after its folder is claimed."""

    cfg: RunConfig
    inputs: Inputs
    run_dir: Path
    main: bool  # process 0: writes the folder
    resume: bool
    tracking: Tracking | None = None  # --log-to: fed by the training loop's hooks


def train_select_save(
    here: RunContext,
    job: TrainingJob,
    params,
    report: RunRecord,
    caller: Hooks,
):
    """Steps 6-8 with the run folder as their record: train (each epoch checkpointed,
    recorded and plotted), select an epoch, fit the decisions asked for, save the
    classifier. A failure records where
    the run stopped before it is raised."""
    cfg, run_dir, main, resume = here.cfg, here.run_dir, here.main, here.resume
    classes = job.plan.classes
    checkpoints = EpochCheckpoints(run_dir / CHECKPOINTS_DIR, keep=cfg.output.keep_checkpoints)
    hooks = recording_hooks(run_dir, main, resume, here.tracking, report, classes, caller)
    if main:
        write_json(run_dir / METRICS_FILE, report.to_dict())
        write_json(run_dir / "config.json", cfg.to_dict())
    disk_dir = run_dir / "prefix" if report.prefix_storage == "disk" else None
    if disk_dir is not None and several():
        disk_dir = disk_dir / f"process-{jax.process_index()}"
    try:
        params, _ = train_classifier(
            job,
            params,
            checkpoints=checkpoints,
            resume=resume,
            prefix_disk_dir=disk_dir,
            hooks=hooks,
        )
        chosen = select_epoch(report, cfg.train)
        if main:  # the plots once more, the kept epoch marked
            plot_history(report.epochs, run_dir, classes, selected=chosen)
        if job.plan.multi_label:  # each label's threshold, chosen on validation or fixed
            decisions: Decisions | None = fit_thresholds(job, params)
        else:
            decisions = fit_decisions(job, params, run_dir if main else None)
        if decisions is not None:
            report.decisions = decisions.record
        save(cfg, here.inputs, params, run_dir, decisions)
    except BaseException as err:
        if main:
            record_stop(report, run_dir, checkpoints, cfg, err)
        raise
    finally:
        checkpoints.close()
        if disk_dir is not None:
            shutil.rmtree(disk_dir, ignore_errors=True)  # large, and rebuilt on --resume
    return params
