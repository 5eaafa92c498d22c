"""A fine-tuning run end to end: GPT-2 + labelled text -> classifier + report in a run folder.

``run(RunConfig(...))`` is what ``python -m experiments.spam`` (the lab: its defaults)
and ``python -m experiments.finetune`` (your own data) call. Every command-line flag is
a field of one of the config dataclasses below (``gpt2_jax.finetune.cli`` makes the flags from
them), so each setting is written once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from gpt2_jax.classifier.classifier import ClassifierConfig, save_classifier, with_class_head
from gpt2_jax.data import checks, encoding, sms, tables
from gpt2_jax.data import splits as splitting
from gpt2_jax.data.tokenizer import get_tokenizer
from gpt2_jax.finetune import missing
from gpt2_jax.finetune.config import DataConfig, ModelConfig, RunConfig
from gpt2_jax.finetune.examples import pick_examples, write_examples
from gpt2_jax.finetune.folder import NoLock, RunFolderLock, prepare_run_dir, run_name
from gpt2_jax.finetune.job import Hooks, TrainingJob, TrainingPlan, train_classifier
from gpt2_jax.finetune.record import METRICS_FILE, RunRecord, Selected
from gpt2_jax.finetune.report import epoch_table, plot_history, write_json
from gpt2_jax.model.config import OPENAI_TO_CONFIG, GPTConfig, settings_for_size
from gpt2_jax.model.gpt import GPTModel, merge_lora
from gpt2_jax.model.pooling import POOL_WORDS, reads_padding
from gpt2_jax.parallel.distributed import is_main, several, share_outcome
from gpt2_jax.training.checkpoints import (
    CHECKPOINTS_DIR,
    EpochCheckpoints,
    Restored,
)
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.training.loss import class_weights
from gpt2_jax.training.memory import (
    GIB,
    available_bytes,
    estimate_peak_bytes,
    memory_check,
    peak_memory_bytes,
)
from gpt2_jax.training.partition import Partition, resolve_trainable
from gpt2_jax.training.train import best_epoch, epoch_score
from gpt2_jax.util.logs import RUN_LOG, run_log
from gpt2_jax.weights.download import download_gpt2
from gpt2_jax.weights.hub import fetch_hf_repo
from gpt2_jax.weights.openai import load_weights
from gpt2_jax.weights.pretrained import load_pretrained, read_folder_settings

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


def _backbone_files(m: ModelConfig) -> tuple[dict, Path]:
    """``(settings, folder with the config, the weights and the BPE files)``, in
    OpenAI's or Hugging Face's layout, downloading or fetching GPT-2 first if needed;
    nothing heavy is read yet."""
    model_dir = Path(m.model_dir) if m.model_dir else None
    if m.hf_repo is not None:
        model_dir = fetch_hf_repo(m.hf_repo, revision=m.hf_revision, offline=m.offline or None)
    if m.weights == "random":
        if model_dir is not None and model_dir.is_dir():
            try:
                return read_folder_settings(model_dir), model_dir
            except FileNotFoundError:
                pass  # a folder without a model: GPT-2's sizes, its BPE files if any
        return settings_for_size(m.model_size), model_dir or Path(m.models_dir) / m.model_size
    if model_dir is None:
        model_dir = download_gpt2(m.model_size, m.models_dir, offline=m.offline or None)
    return read_folder_settings(model_dir), model_dir


@dataclasses.dataclass
class LabelledData:
    """The splits as frames (``text``, ``label``, ``where``, ``y``) and the class names."""

    splits: splitting.Splits
    classes: tuple[str, ...]
    files: dict[str, str]
    rows: int
    joined: list[dict]  # records that quoting joined over several lines (SMS format)
    duplicates: checks.DuplicateReport  # texts shared between splits (before any drop)
    dropped: dict[str, int]  # rows left out of val/test with --drop-duplicates


def read_data(d: DataConfig, seed: int, offline: bool = False) -> LabelledData:
    """Read, order the classes, split: every data error comes before the weights load."""
    if d.data_file is None:
        path = sms.fetch_sms_spam(d.data_dir, offline=offline or None)
        fmt = "sms"
    elif Path(d.data_file).suffix.lower() == ".zip":  # the SMS Spam Collection's zip
        path, fmt = sms.sms_from_zip(d.data_file, d.data_dir), "sms"
    else:
        path, fmt = Path(d.data_file), d.data_format

    def read(p: Path, fmt: str):
        return tables.read_table(
            p,
            fmt=fmt,
            text_column=d.text_column,
            label_column=d.label_column,
            sms_quoting=d.quoting,
        )

    df = read(path, fmt)
    checks.check_labels(
        df["label"], df["where"], explicit=d.class_order(), source=str(path), column=d.label_column
    )
    classes = splitting.class_names(df["label"], d.class_order(), where=df["where"])
    absent = sorted(set(classes) - set(df["label"]))
    if absent:
        raise ValueError(
            f"--labels names {', '.join(map(repr, absent))}, which never occur(s) "
            f"in {path}; list only the classes the data has"
        )
    df = splitting.add_class_ids(df, classes, what="training")
    cut_val, cut_test = d.val_file is None, d.test_file is None
    test_size = None if d.test_size == "rest" else d.test_size
    assert not isinstance(test_size, str)  # DataConfig allows no other word
    train_size = d.train_size
    if not (cut_val or cut_test) and isinstance(train_size, float):
        train_size = len(df)  # validation and test have files of their own: train on all
    splits = splitting.split(
        df,
        train_size,
        d.val_size if cut_val else 0,
        test_size if cut_test else 0,
        seed,
        d.balance,
        d.stratify,
        holdout_at=d.holdout_row() if cut_val and cut_test else None,
    )
    extra = {}
    for name, file in (("val", d.val_file), ("test", d.test_file)):
        if file is not None:  # by their own extension unless --format says otherwise
            frame = read(Path(file), "auto" if d.data_format == "auto" else fmt)
            extra[name] = splitting.add_class_ids(frame, classes, what="training")
    splits = dataclasses.replace(splits, **extra)
    duplicates = checks.duplicate_texts(splits)
    dropped: dict[str, int] = {}
    if d.drop_duplicates:
        splits, dropped = checks.drop_duplicate_texts(splits)
    files = {"train": str(path), "val": d.val_file or str(path), "test": d.test_file or str(path)}
    joined = df.attrs.get("joined", [])
    return LabelledData(splits, classes, files, len(df), joined, duplicates, dropped)


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run records where it stopped."""

    def __str__(self) -> str:
        return "terminated (SIGTERM)"


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Turn SIGTERM into ``Terminated`` while a run goes on (main thread only); returns
    the function that puts the previous handler back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def _record_stop(
    report: RunRecord,
    run_dir: Path,
    checkpoints: EpochCheckpoints,
    cfg: RunConfig,
    err: BaseException,
) -> None:
    """``metrics.json`` says why the run stopped and where its last good state is; the
    error gets the same as a note. Best effort: the disk may be what failed."""
    kept = checkpoints.latest_epoch()
    entry = "spam" if run_name(cfg).startswith("spam-") else "finetune"
    where = (
        f"the last good state (epoch {kept}) is in {checkpoints.directory}; "
        f"`python -m experiments.{entry} --resume {run_dir}` goes on from there"
        if kept
        else "no epoch had finished, so no training state was saved"
    )
    reason = (str(err).splitlines() or [""])[0] or (
        "interrupted" if isinstance(err, KeyboardInterrupt) else type(err).__name__
    )
    report.status = f"stopped: {reason}; {where}"
    try:
        write_json(run_dir / METRICS_FILE, report.to_dict())
    except OSError:
        pass
    err.add_note(where)


@dataclasses.dataclass(frozen=True, eq=False)
class Inputs:
    """What a run reads before it claims its folder (cheap, so every data error comes
    before 500 MB of weights): the data, the backbone's files and sizes, the encoded
    splits and the checked training plan."""

    labelled: LabelledData
    settings: dict
    model_dir: Path
    model_cfg: GPTConfig
    length: int  # every text is padded or cut to this many tokens
    patterns: tuple[str, ...]  # what trains
    plan: TrainingPlan


def read_inputs(cfg: RunConfig) -> Inputs:
    """Step 1: read and split the data, find the backbone, encode, check the plan."""
    m, tc = cfg.model, cfg.train
    labelled = missing.data_first(lambda: read_data(cfg.data, tc.seed, m.offline), m)
    classes, splits = labelled.classes, labelled.splits
    weights = class_weights(tc.class_weights, splits.train["y"].to_numpy(), classes)
    settings, model_dir = missing.model_files(lambda: _backbone_files(m), m)
    model_cfg = m.gpt_config(settings, len(classes))
    tokenizer = get_tokenizer(model_dir, offline=m.offline or None)
    named_lengths: dict[str, int | None] = {"longest": None, "context": model_cfg.context_length}
    ml = cfg.data.max_length
    max_length = named_lengths[ml] if isinstance(ml, str) else ml
    encoded, length = encoding.encode_splits(
        splits,
        tokenizer,
        model_cfg.context_length,
        max_length,
        vocab_size=model_cfg.vocab_size,
        truncate=cfg.data.truncate,
    )
    patterns = resolve_trainable(tc.trainable, model_cfg.n_layers, m.weights == "pretrained")
    plan = TrainingPlan(encoded, classes, tc, cfg.speed, m.pool, weights)
    return Inputs(labelled, settings, model_dir, model_cfg, length, tuple(patterns), plan)


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


def describe_inputs(cfg: RunConfig, inputs: Inputs, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Step 3: say what the run reads (the log), and the record's ``data`` section."""
    m, tc, labelled = cfg.model, cfg.train, inputs.labelled
    classes, model_dir, length = labelled.classes, inputs.model_dir, inputs.length
    logger.info(f"run folder: {run_dir}" + (" (resuming)" if resume else ""))
    logger.info(
        f"GPT-2 from {model_dir}"
        + (f" (Hub {m.hf_repo}, commit {model_dir.name})" if m.hf_repo else "")
    )
    logger.info(f"settings: {inputs.settings}")
    logger.info("config mapping: " + ", ".join(f"{k} -> {v}" for k, v in OPENAI_TO_CONFIG.items()))
    logger.info(f"model config: {inputs.model_cfg}")
    logger.info(
        f"data: {labelled.rows} rows in {labelled.files['train']}; classes (id order) {list(classes)}"
    )
    data_info: dict[str, Any] = {
        "files": labelled.files,
        "rows": labelled.rows,
        "classes": list(classes),
        "joined": labelled.joined,
        "max_length": length,
        "held_out_at": labelled.splits.held_out_at,  # shuffled row where val starts
        "duplicates": labelled.duplicates.as_dict(),
        "duplicates_dropped": labelled.dropped,
        "splits": {},
    }
    if labelled.duplicates.rows:
        logger.info(_duplicates_line(labelled))
    if labelled.joined:
        logger.info(
            f"quoting joined {len(labelled.joined)} message(s) over several lines: "
            + ", ".join(f"{j['where']} ({j['lines']} lines)" for j in labelled.joined[:5])
            + (" ..." if len(labelled.joined) > 5 else "")
            + " (--quoting none reads one message per line)"
        )
    for name, split in inputs.plan.encoded.items():
        counts = np.bincount(split.labels, minlength=len(classes)).tolist()
        data_info["splits"][name] = {
            "n": len(split),
            **dict(zip(classes, counts)),
            "truncated": split.truncated,
        }
        logger.info(
            f"{name:5}: {len(split):5} texts ("
            + " / ".join(f"{c} {k}" for k, c in zip(classes, counts))
            + ")"
            + (
                f", {split.truncated} truncated to {length} tokens "
                f"(each keeps {encoding.kept_words(length, cfg.data.truncate)}; --truncate)"
                if split.truncated
                else ""
            )
        )
    batches = inputs.plan.batches
    data_info["batches_per_epoch"] = batches
    padded = reads_padding(m.pool, inputs.model_cfg.causal)
    width = f"padded to {length} tokens" if padded else f"padded to at most {length} tokens"
    logger.info(f"{width}; batch {tc.batch_size} -> {batches} batches per epoch")
    if not padded:
        logger.info(
            "  (each batch only to its longest text, in 32-token steps; packed rows in the prefix)"
        )
    logger.info(f"pool {m.pool}: the head reads {POOL_WORDS[m.pool]}")
    warning = padding_warning(inputs.plan.encoded, length, padded)
    if warning:
        logger.info(warning)
    return data_info


def _duplicates_line(labelled: LabelledData) -> str:
    """The texts validation and test share with earlier splits, and what was done."""
    line = labelled.duplicates.line()
    if labelled.dropped:
        return line + "; left out: " + ", ".join(f"{k} {v}" for k, v in labelled.dropped.items())
    return line + " (their scores partly measure memory; --drop-duplicates leaves them out)"


def padding_warning(encoded: dict, length: int, padded: bool, limit: float = 2.0) -> str | None:
    """One line when padding multiplies the work by more than ``limit``: every row is
    ``length`` wide (a pool that reads padding) while the texts are much shorter."""
    real = sum(int(split.lengths.sum()) for split in encoded.values())
    rows = sum(len(split) for split in encoded.values())
    if not padded or not real:
        return None
    factor = rows * length / real
    if factor <= limit:
        return None
    return (
        f"note: the texts hold {real / rows:.0f} real tokens on average and every row is "
        f"{length} wide, so {factor:.1f}x the work goes to padding; --pool last-real "
        "computes real tokens only (faster, and the classifier exports to transformers), "
        "or lower --max-length"
    )


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
        "class weights: " + ", ".join(f"{c} {w:.4f}" for c, w in zip(inputs.plan.classes, weights))
    )
    return params, settings, TrainingJob(inputs.plan, GPTModel(inputs.model_cfg), partition)


def start_record(
    cfg: RunConfig, inputs: Inputs, settings: dict, job: TrainingJob, run_dir: Path, **known
) -> RunRecord:
    """Step 5: the record of a run that trains (``known``: ``backbone``, ``data``,
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


def save(cfg: RunConfig, inputs: Inputs, params, run_dir: Path) -> None:
    """Step 8: the classifier (LoRA folded in with ``--merge-lora``), its tokenizer, and
    a few validation texts per class for the served page."""
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
    )
    save_classifier(run_dir, params, spec, bpe_dir=inputs.model_dir)
    if is_main():
        write_examples(run_dir, pick_examples(inputs.labelled.splits, inputs.plan.classes))


def run(
    cfg: RunConfig,
    log: Callable[[str], None] | None = None,
    *,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Fine-tune and evaluate; returns the contents of ``metrics.json``. ``resume``:
    go on from the last epoch saved in ``cfg.output.run_dir`` (see ``resume_config``).
    ``log``: a callable that gets each message instead of the terminal (default: the
    ``gpt2_jax`` loggers, shown on stdout unless the application configured logging); the
    run folder's ``run.log`` keeps a copy either way.

    The steps: read the inputs, claim the folder, describe the inputs, (a dry run stops
    there), load the backbone, start the record, train, select an epoch, save, finish."""
    started = time.perf_counter()
    main = is_main()  # with several processes, only process 0 writes the run folder and logs
    if several() and cfg.output.run_dir is None:  # checked by every process alike
        raise ValueError(
            "with several processes give --run-dir (on a file system every "
            "host sees): the default name holds the time, which differs"
        )
    inputs = read_inputs(cfg)
    run_dir, lock = claim_folder(cfg, resume, main)
    stop_on_sigterm = _sigterm_as_interrupt()
    try:
        with run_log(run_dir / RUN_LOG if main else None, log, main):
            return _steps(RunContext(cfg, inputs, run_dir, main, resume), started, on_step)
    finally:
        lock.release()
        stop_on_sigterm()


def _steps(here: RunContext, started: float, on_step: Callable[[int], None] | None) -> dict:
    """``run``'s steps once its folder is claimed: describe the inputs (a dry run stops
    there), load the backbone, start the record, train, select, save, finish."""
    cfg, inputs, run_dir, main = here.cfg, here.inputs, here.run_dir, here.main
    data_info = describe_inputs(cfg, inputs, run_dir, here.resume)
    n_texts = sum(map(len, inputs.plan.encoded.values()))
    logger.info(memory_check(inputs.settings, n_texts, inputs.length, cfg.speed.prefix_cache))
    storage = _prefix_storage(cfg, inputs.settings, n_texts, inputs.length)
    backbone = {"folder": str(inputs.model_dir)}
    if cfg.model.hf_repo:
        backbone.update(hf_repo=cfg.model.hf_repo, hf_commit=inputs.model_dir.name)
    if cfg.train.epochs == 0:  # a dry run: the data and the plan, no weights, no classifier
        report = RunRecord(
            run_dir=str(run_dir),
            config=cfg.to_dict(),
            settings=inputs.settings,
            backbone=backbone,
            data=data_info,
            status="checked: --epochs 0 reads and splits the data only; nothing "
            "was trained and no classifier was saved",
        )
        if main:
            write_json(run_dir / METRICS_FILE, report.to_dict())
        logger.info(report.status)
        return report.to_dict()

    params, settings, job = load_backbone(cfg, inputs)
    report = start_record(
        cfg,
        inputs,
        settings,
        job,
        run_dir,
        backbone=backbone,
        data=data_info,
        prefix_storage=storage,
    )
    params = train_select_save(here, job, params, report, on_step)
    report.status = "finished"
    report.total_seconds = time.perf_counter() - started
    report.peak_memory_gib = peak_memory_bytes() / GIB
    if main:
        write_json(run_dir / METRICS_FILE, report.to_dict())
    logger.info(
        f"done in {report.total_seconds:.1f} s (peak memory {report.peak_memory_gib:.2f} "
        f"GiB); metrics.json, plots and the classifier are in {run_dir}"
    )
    return report.to_dict()


@dataclasses.dataclass(frozen=True, eq=False)
class RunContext:
    """Where a run is, for the steps after its folder is claimed."""

    cfg: RunConfig
    inputs: Inputs
    run_dir: Path
    main: bool  # process 0: writes the folder
    resume: bool


def train_select_save(
    here: RunContext,
    job: TrainingJob,
    params,
    report: RunRecord,
    on_step: Callable[[int], None] | None = None,
):
    """Steps 6-8 with the run folder as their record: train (each epoch checkpointed,
    recorded and plotted), select an epoch, save the classifier. A failure records where
    the run stopped before it is raised."""
    cfg, run_dir, main, resume = here.cfg, here.run_dir, here.main, here.resume
    classes = job.plan.classes
    checkpoints = EpochCheckpoints(run_dir / CHECKPOINTS_DIR, keep=cfg.output.keep_checkpoints)
    if resume:
        previous = RunRecord.read(run_dir / METRICS_FILE)
        report.epochs = previous.epochs
        report.resumed = (previous.resumed or []) + [
            {"after_epoch": 0, "at": dt.datetime.now().isoformat(timespec="seconds")}
        ]

    def on_resume(restored: Restored) -> None:  # called only when resuming
        assert report.resumed is not None  # set above when resuming
        report.resumed[-1].update(
            after_epoch=restored.meta["epoch"],
            skipped=[{"epoch": e, "why": why} for e, why in restored.skipped],
        )
        report.epochs = restored.meta["history"]

    def on_epoch(history):
        report.epochs = history
        if main:
            write_json(run_dir / METRICS_FILE, report.to_dict())
            plot_history(history, run_dir, classes)
        logger.info(epoch_table(history[-1], classes))

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
            hooks=Hooks(on_epoch=on_epoch, on_step=on_step, on_resume=on_resume),
        )
        chosen = select_epoch(report, cfg.train)
        if main:  # the plots once more, the kept epoch marked
            plot_history(report.epochs, run_dir, classes, selected=chosen)
        save(cfg, here.inputs, params, run_dir)
    except BaseException as err:
        if main:
            _record_stop(report, run_dir, checkpoints, cfg, err)
        raise
    finally:
        checkpoints.close()
        if disk_dir is not None:
            shutil.rmtree(disk_dir, ignore_errors=True)  # large, and rebuilt on --resume
    return params
