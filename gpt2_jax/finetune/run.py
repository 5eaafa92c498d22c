"""A fine-tuning run end to end: GPT-2 + labelled text -> classifier + report in a run folder.

``run(RunConfig(...))`` is what ``python -m experiments.spam`` (the lab: its defaults)
and ``python -m experiments.finetune`` (your own data) call. Every command-line flag is
a field of one of the config dataclasses below (``gpt2_jax.finetune.cli`` makes the flags from
them), so each setting is written once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gpt2_jax.classifier.classifier import ClassifierConfig, save_classifier, with_class_head
from gpt2_jax.data import sms, tables
from gpt2_jax.data.tokenizer import get_tokenizer
from gpt2_jax.finetune.config import DataConfig, ModelConfig, RunConfig, SpeedConfig
from gpt2_jax.finetune.folder import NoLock, RunFolderLock, prepare_run_dir, run_name
from gpt2_jax.finetune.record import METRICS_FILE, RunRecord, Selected
from gpt2_jax.finetune.report import epoch_table, plot_history, write_json
from gpt2_jax.model.config import OPENAI_TO_CONFIG, settings_for_size
from gpt2_jax.model.gpt import GPTModel, merge_lora
from gpt2_jax.model.pooling import reads_padding
from gpt2_jax.parallel.distributed import is_main, several, share_outcome
from gpt2_jax.parallel.mesh import Placement, describe
from gpt2_jax.training.checkpoints import (
    CHECKPOINTS_DIR,
    EpochCheckpoints,
    Restored,
    run_fingerprints,
)
from gpt2_jax.training.memory import (
    GIB,
    available_bytes,
    estimate_peak_bytes,
    memory_check,
    peak_memory_bytes,
)
from gpt2_jax.training.prefix import prefix_inputs
from gpt2_jax.training.train import (
    Partition,
    SelectedState,
    TrainConfig,
    Trainer,
    TrainState,
    best_epoch,
    class_weights,
    epoch_score,
    fit,
    merge,
    optimizer_for,
    resolve_trainable,
)
from gpt2_jax.weights.download import download_gpt2
from gpt2_jax.weights.hub import fetch_hf_repo
from gpt2_jax.weights.openai import load_weights
from gpt2_jax.weights.pretrained import load_pretrained, read_folder_settings


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

    splits: tables.Splits
    classes: tuple[str, ...]
    files: dict[str, str]
    rows: int
    joined: list[dict]  # records that quoting joined over several lines (SMS format)


def read_data(d: DataConfig, seed: int, offline: bool = False) -> LabelledData:
    """Read, order the classes, split: every data error comes before the weights load."""
    if d.data_file is None:
        path = sms.fetch_sms_spam(d.data_dir, offline=offline or None)
        fmt = "sms"
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
    classes = tables.class_names(df["label"], d.class_order(), where=df["where"])
    absent = sorted(set(classes) - set(df["label"]))
    if absent:
        raise ValueError(
            f"--labels names {', '.join(map(repr, absent))}, which never occur(s) "
            f"in {path}; list only the classes the data has"
        )
    df = tables.add_class_ids(df, classes, what="training")
    cut_val, cut_test = d.val_file is None, d.test_file is None
    test_size = None if d.test_size == "rest" else d.test_size
    assert not isinstance(test_size, str)  # DataConfig allows no other word
    train_size = d.train_size
    if not (cut_val or cut_test) and isinstance(train_size, float):
        train_size = len(df)  # validation and test have files of their own: train on all
    splits = tables.split(
        df,
        train_size,
        d.val_size if cut_val else 0,
        test_size if cut_test else 0,
        seed,
        d.balance,
        d.stratify,
    )
    extra = {}
    for name, file in (("val", d.val_file), ("test", d.test_file)):
        if file is not None:  # by their own extension unless --format says otherwise
            frame = read(Path(file), "auto" if d.data_format == "auto" else fmt)
            extra[name] = tables.add_class_ids(frame, classes, what="training")
    splits = dataclasses.replace(splits, **extra)
    files = {"train": str(path), "val": d.val_file or str(path), "test": d.test_file or str(path)}
    return LabelledData(splits, classes, files, len(df), df.attrs.get("joined", []))


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


def build_trainer(
    model: GPTModel,
    tc: TrainConfig,
    speed: SpeedConfig,
    pool: str,
    weights: np.ndarray,
    partition: Partition,
    n_train: int,
    log: Callable[[str], None] = print,
) -> Trainer:
    """The jitted steps for this setup (``n_train`` training examples, for the learning
    rate schedule); ``trainer.start`` is the first block computed per step (the blocks
    before it are the frozen prefix, computed once per text)."""
    start = partition.first_block(model.cfg.n_layers) if speed.prefix_cache else 0
    if start and model.cfg.drop_rate > 0:
        log("dropout is on, so the frozen blocks are not a fixed function: no prefix cache")
        start = 0
    placement = check_mesh(speed, tc)
    if placement is not None:
        log(f"mesh: {describe(placement.mesh)}")
    computed = dataclasses.replace(
        model.cfg,
        attention=speed.attention,
        matmul_dtype=None if speed.train_dtype == "float32" else speed.train_dtype,
    )
    if computed != model.cfg:
        model = GPTModel(computed)
    return Trainer(
        model,
        optimizer_for(tc, n_train),
        weights,
        pool=pool,
        seed=tc.seed,
        start=start,
        pooled_only=speed.pooled_only,
        ignore_index=tc.ignore_index,
        placement=placement,
    )


def train_classifier(
    model: GPTModel,
    params,
    encoded: dict,
    classes: tuple[str, ...],
    tc: TrainConfig,
    speed: SpeedConfig,
    pool: str,
    weights: np.ndarray,
    partition: Partition,
    *,
    checkpoints: EpochCheckpoints | None = None,
    resume: bool = False,
    prefix_disk_dir: Path | None = None,
    on_epoch: Callable[[list[dict]], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    on_resume: Callable[[Restored], None] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[dict, list[dict]]:
    """Fine-tune ``params`` (the parameter tree with its class head) on ``encoded``
    (``{"train": Encoded, ...}``) and evaluate every split after each epoch.

    Puts the pieces together: the partition into trainable and frozen trees, the
    inputs (token ids, or the frozen prefix computed once), the jitted steps, epoch
    checkpoints (``resume``: first restore the latest), the loop. Returns the trained
    parameter tree of the epoch ``tc.select_by`` picks (``best_epoch``) and the history
    (the first epoch trained in this call also holds ``prefix_seconds``)."""
    cfg = model.cfg
    frozen, trainable = partition.frozen(params), partition.trainable(params)
    del params
    trainer = build_trainer(model, tc, speed, pool, weights, partition, len(encoded["train"]), log)
    start, bucketed = trainer.start, speed.buckets and not reads_padding(pool, cfg.causal)
    state, frozen = trainer.init(trainable), trainer.place(frozen)
    select = tc.select_by != "last"
    check_schedule(tc, len(encoded["train"]) // tc.batch_size, len(encoded.get("val", ())))
    best = state.trainable if select else None  # the best epoch's trainable leaves so far
    fingerprints = run_fingerprints(frozen, encoded["train"].ids, encoded["train"].labels)
    history, first_epoch = [], 1
    restored = (
        checkpoints.resume(SelectedState(*state, best) if select else state, fingerprints, log=log)
        if resume and checkpoints
        else None
    )
    if restored is not None:
        if on_resume is not None:
            on_resume(restored)
        state, history = trainer.place(TrainState(*restored.state[:3])), restored.meta["history"]
        best = trainer.place(restored.state.best) if select else None
        first_epoch = restored.meta["epoch"] + 1
        assert checkpoints is not None  # restored from them
        log(
            f"resuming after epoch {restored.meta['epoch']} (step {restored.meta['step']}) "
            f"from {checkpoints.directory}"
        )
        if (
            tc.patience
            and history
            and (history[-1]["epoch"] - best_epoch(history, tc.select_by) >= tc.patience)
        ):
            first_epoch = tc.epochs + 1  # it had stopped early: nothing more to train
            log("the run had stopped early at that epoch: keeping its choice")

    inputs = {name: split.ids for name, split in encoded.items()}
    prefix_seconds = 0.0
    if start and first_epoch <= tc.epochs:
        t0 = time.perf_counter()
        log(f"computing the frozen blocks h0..h{start - 1} once per text ({speed.prefix_dtype})")
        cache_dir = speed.prefix_cache_dir
        if cache_dir is not None and several():
            log(
                "--prefix-cache-dir is not used with several processes (each would decide on "
                "its own whether to reuse it); the prefix is computed"
            )
            cache_dir = None
        inputs = prefix_inputs(
            dataclasses.replace(cfg, attention=speed.attention),
            merge(frozen, trainable),
            encoded,
            start,
            bucketed=bucketed,
            matmul_dtype=speed.matmul_dtype(),
            cache_dir=cache_dir,
            disk_dir=prefix_disk_dir,
            log=log,
            placement=trainer.placement,
        )
        prefix_seconds = time.perf_counter() - t0
        log(f"prefix computed in {prefix_seconds:.1f} s")

    def after_epoch(state, history):
        nonlocal best
        epoch = history[-1]["epoch"]
        if epoch == first_epoch:
            history[-1]["prefix_seconds"] = prefix_seconds  # the one-off pass, before it
        chosen = best_epoch(history, tc.select_by)
        if select and chosen == epoch:
            best = jax.tree.map(jnp.copy, state.trainable)  # the step donates the original
        if checkpoints is not None:
            checkpoints.save(
                epoch,
                SelectedState(*state, best) if select else state,
                {
                    "epoch": epoch,
                    "step": int(state.step),
                    "seed": tc.seed,
                    "history": history,
                    **fingerprints,
                    "random_state": "batch order drawn from (seed, epoch), dropout keys from "
                    "(seed, step): nothing else to save",
                },
            )
        if on_epoch is not None:
            on_epoch(history)
        if tc.patience and epoch - chosen >= tc.patience:
            log(
                f"stopping early: no better {tc.select_by} than epoch {chosen}'s for "
                f"{tc.patience} epoch(s)"
            )
            return True
        return False

    state, history = fit(
        trainer,
        state,
        frozen,
        inputs,
        encoded,
        classes,
        epochs=tc.epochs,
        batch_size=tc.batch_size,
        seed=tc.seed,
        bucketed=bucketed,
        first_epoch=first_epoch,
        history=history,
        on_epoch=after_epoch,
        on_step=on_step,
    )
    kept = best if select else state.trainable
    assert kept is not None  # with select, best is set from the first epoch on
    return merge(frozen, kept), history


def _prefix_storage(
    cfg: RunConfig, settings: dict, n_texts: int, length: int, log: Callable[[str], None]
) -> str:
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
        log(
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


def _quiet(*_) -> None:
    """The log of processes other than 0."""


def run(
    cfg: RunConfig,
    log: Callable[[str], None] = print,
    *,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Fine-tune and evaluate; returns the contents of ``metrics.json``. ``resume``:
    go on from the last epoch saved in ``cfg.output.run_dir`` (see ``resume_config``)."""
    started = time.perf_counter()
    m, tc = cfg.model, cfg.train
    main = is_main()  # with several processes, only process 0 writes the run folder and logs
    if several() and cfg.output.run_dir is None:  # checked by every process alike
        raise ValueError(
            "with several processes give --run-dir (on a file system every "
            "host sees): the default name holds the time, which differs"
        )
    if not main:
        log = _quiet

    # ---- data first: cheap, and its errors should come before loading 500 MB ----
    labelled = read_data(cfg.data, tc.seed, m.offline)
    classes, splits = labelled.classes, labelled.splits
    weights = class_weights(tc.class_weights, splits.train["y"].to_numpy(), classes)
    settings, model_dir = _backbone_files(m)
    model_cfg = m.gpt_config(settings, len(classes))
    tokenizer = get_tokenizer(model_dir, offline=m.offline or None)
    named_lengths: dict[str, int | None] = {"longest": None, "context": model_cfg.context_length}
    ml = cfg.data.max_length
    max_length = named_lengths[ml] if isinstance(ml, str) else ml
    encoded, length = tables.encode_splits(
        splits, tokenizer, model_cfg.context_length, max_length, vocab_size=model_cfg.vocab_size
    )
    patterns = resolve_trainable(tc.trainable, model_cfg.n_layers, m.weights == "pretrained")
    batches = len(encoded["train"]) // tc.batch_size
    if batches == 0:
        raise ValueError(
            f"{len(encoded['train'])} training rows < batch size {tc.batch_size}: "
            "an epoch would have no steps; use more training rows or a smaller "
            "--batch-size"
        )
    check_schedule(tc, batches, len(encoded.get("val", ())))
    check_mesh(cfg.speed, tc)

    lock: RunFolderLock | NoLock
    try:
        if main:
            run_dir, lock = prepare_run_dir(cfg, resume)
        else:
            assert cfg.output.run_dir is not None  # checked above: several processes need it
            run_dir, lock = Path(cfg.output.run_dir).resolve(), NoLock()
    except BaseException:
        share_outcome(False, "prepare the run folder")
        raise
    share_outcome(True, "prepare the run folder")
    stop_on_sigterm = _sigterm_as_interrupt()
    try:
        log(f"run folder: {run_dir}" + (" (resuming)" if resume else ""))
        log(
            f"GPT-2 from {model_dir}"
            + (f" (Hub {m.hf_repo}, commit {model_dir.name})" if m.hf_repo else "")
        )
        log(f"settings: {settings}")
        log("config mapping: " + ", ".join(f"{k} -> {v}" for k, v in OPENAI_TO_CONFIG.items()))
        log(f"model config: {model_cfg}")
        log(
            f"data: {labelled.rows} rows in {labelled.files['train']}; classes (id order) "
            f"{list(classes)}"
        )
        backbone = {"folder": str(model_dir)}
        if m.hf_repo:
            backbone.update(hf_repo=m.hf_repo, hf_commit=model_dir.name)
        data_info: dict[str, Any] = {
            "files": labelled.files,
            "rows": labelled.rows,
            "classes": list(classes),
            "joined": labelled.joined,
            "max_length": length,
            "splits": {},
        }
        if labelled.joined:
            log(
                f"quoting joined {len(labelled.joined)} message(s) over several lines: "
                + ", ".join(f"{j['where']} ({j['lines']} lines)" for j in labelled.joined[:5])
                + (" ..." if len(labelled.joined) > 5 else "")
                + " (--quoting none reads one message per line)"
            )
        for name, split in encoded.items():
            counts = np.bincount(split.labels, minlength=len(classes)).tolist()
            data_info["splits"][name] = {
                "n": len(split),
                **dict(zip(classes, counts)),
                "truncated": split.truncated,
            }
            log(
                f"{name:5}: {len(split):5} texts ("
                + " / ".join(f"{c} {k}" for k, c in zip(classes, counts))
                + ")"
                + (f", {split.truncated} truncated to {length} tokens" if split.truncated else "")
            )
        data_info["batches_per_epoch"] = batches
        log(f"padded to {length} tokens; batch {tc.batch_size} -> {batches} batches per epoch")
        n_texts = sum(map(len, encoded.values()))
        log(memory_check(settings, n_texts, length, cfg.speed.prefix_cache))
        storage = _prefix_storage(cfg, settings, n_texts, length, log)
        if tc.epochs == 0:  # a dry run: the data and the plan, no weights, no classifier
            report = RunRecord(
                run_dir=str(run_dir),
                config=cfg.to_dict(),
                settings=settings,
                backbone=backbone,
                data=data_info,
                status="checked: --epochs 0 reads and splits the data only; nothing "
                "was trained and no classifier was saved",
            )
            if main:
                write_json(run_dir / METRICS_FILE, report.to_dict())
            log(report.status)
            return report.to_dict()

        # ---- weights: the heavy part ----
        pretrained = None
        if m.weights == "pretrained":
            log(f"loading GPT-2 from {model_dir}")
            settings, pretrained = load_pretrained(model_dir)
            log(f"params keys: {list(pretrained)} ({len(pretrained['blocks'])} blocks)")
        has_pretrained = pretrained is not None
        params, from_init = with_class_head(
            load_weights(pretrained) if pretrained is not None else None, model_cfg, tc.seed
        )
        del pretrained  # the NumPy copy: from here on only the JAX tree holds the weights
        if has_pretrained:
            log(f"from the checkpoint: all but {from_init} (new, seeded init)")
        partition = Partition.from_patterns(params, patterns)
        counts = partition.counts
        log(
            f"trainable patterns {list(patterns)}: {counts['trainable']:,} trainable / "
            f"{counts['frozen']:,} frozen parameters (total {sum(counts.values()):,})"
        )
        log("class weights: " + ", ".join(f"{c} {w:.4f}" for c, w in zip(classes, weights)))

        report = RunRecord(
            run_dir=str(run_dir),
            config=cfg.to_dict(),
            seed=tc.seed,
            settings=settings,
            backbone=backbone,
            model_config=dataclasses.asdict(model_cfg),
            data=data_info,
            trainable_patterns=list(patterns),
            parameters=counts,
            class_weights=weights.tolist(),
            backend=jax.default_backend(),
            prefix_storage=storage,
        )
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

        if main:
            write_json(run_dir / METRICS_FILE, report.to_dict())
            write_json(run_dir / "config.json", cfg.to_dict())

        def on_epoch(history):
            report.epochs = history
            if main:
                write_json(run_dir / METRICS_FILE, report.to_dict())
                plot_history(history, run_dir, classes)
            log(epoch_table(history[-1], classes))

        disk_dir = run_dir / "prefix" if storage == "disk" else None
        if disk_dir is not None and several():
            disk_dir = disk_dir / f"process-{jax.process_index()}"
        try:
            params, _ = train_classifier(
                GPTModel(model_cfg),
                params,
                encoded,
                classes,
                tc,
                cfg.speed,
                m.pool,
                weights,
                partition,
                checkpoints=checkpoints,
                resume=resume,
                prefix_disk_dir=disk_dir,
                on_epoch=on_epoch,
                on_step=on_step,
                on_resume=on_resume,
                log=log,
            )
            chosen = best_epoch(report.epochs, tc.select_by)
            report.selected = Selected(chosen, tc.select_by)
            if tc.select_by != "last":
                report.selected.value = epoch_score(report.epochs[chosen - 1], tc.select_by)
                log(
                    f"the classifier keeps epoch {chosen}: best {tc.select_by} "
                    f"{report.selected.value:.4f}"
                )
            report.stopped_early = report.epochs[-1]["epoch"] < tc.epochs
            saved_cfg = model_cfg
            if cfg.output.merge_lora and model_cfg.lora_rank:
                params, saved_cfg = merge_lora(params, model_cfg)
                log("LoRA adapters folded into the weights of the saved classifier")
            spec = ClassifierConfig(model=saved_cfg, labels=classes, pool=m.pool, max_length=length)
            save_classifier(run_dir, params, spec, bpe_dir=model_dir)
        except BaseException as err:
            if main:
                _record_stop(report, run_dir, checkpoints, cfg, err)
            raise
        finally:
            checkpoints.close()
            if disk_dir is not None:
                shutil.rmtree(disk_dir, ignore_errors=True)  # large, and rebuilt on --resume
        report.status = "finished"
        report.total_seconds = time.perf_counter() - started
        report.peak_memory_gib = peak_memory_bytes() / GIB
        if main:
            write_json(run_dir / METRICS_FILE, report.to_dict())
        log(
            f"done in {report.total_seconds:.1f} s (peak memory {report.peak_memory_gib:.2f} "
            f"GiB); metrics.json, plots and the classifier are in {run_dir}"
        )
        return report.to_dict()
    finally:
        lock.release()
        stop_on_sigterm()
