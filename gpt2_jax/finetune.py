"""The lab end to end: GPT-2 + SMS Spam Collection -> fine-tuned spam classifier + report.

``run(RunConfig(...))`` is what ``python -m experiments.spam`` calls; every flag of
that command is a field here.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from . import data as sms
from .checkpoint import load_gpt2, load_weights, read_settings
from .classifier import save_classifier, with_class_head
from .config import OPENAI_TO_CONFIG, GPTConfig, settings_for_size
from .download import download_gpt2
from .memory import GIB, memory_check, peak_memory_bytes
from .model import GPTModel
from .report import epoch_table, plot_history, write_json
from .resume import CHECKPOINTS_DIR, EpochCheckpoints
from .tokenizer import get_tokenizer
from .train import (NonFiniteError, TrainConfig, class_weights_for, default_trainable, fit,
                    split_counts, trainable_labels)
from .tree import count_params


@dataclasses.dataclass(frozen=True)
class RunConfig:
    # model
    model_size: str = "124M"
    models_dir: str = "models"
    model_dir: str | None = None  # a GPT-2 folder to use as is (no download)
    weights: str = "pretrained"  # or "random": GPT-2 sizes, random init
    drop_rate: float = 0.0
    # data
    data_file: str | None = None  # a local SMSSpamCollection file
    data_dir: str = "data"  # download cache for the dataset
    train_size: int = 2000
    val_size: int = 500
    test_size: int | None = 1000  # None: every row after validation
    balance: bool = False
    max_length: int | None = None  # None: the longest training message
    offline: bool = False
    # training
    train: TrainConfig = TrainConfig()
    # output
    runs_root: str = "runs"
    run_dir: str | None = None
    overwrite: bool = False
    keep_checkpoints: int = 2  # training state of the last K epochs, for --resume

    def __post_init__(self):
        if self.weights not in ("pretrained", "random"):
            raise ValueError(f"weights must be 'pretrained' or 'random', got {self.weights!r}")
        settings_for_size(self.model_size)  # raises on an unknown size
        if self.train_size < self.train.batch_size:
            raise ValueError(
                f"train_size {self.train_size} < batch_size {self.train.batch_size}: with the "
                "incomplete last batch dropped, an epoch would have no steps")
        if self.max_length is not None and self.max_length <= 0:
            raise ValueError(f"max_length must be positive, got {self.max_length}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be at least 1, got {self.keep_checkpoints}")

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """Inverse of ``dataclasses.asdict`` (as stored in ``metrics.json``)."""
        d = dict(d)
        t = dict(d.pop("train"))
        for key in ("trainable", "class_weights"):
            if isinstance(t.get(key), list):
                t[key] = tuple(t[key])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names}, train=TrainConfig(**t))


def resume_config(run_dir: str | os.PathLike) -> RunConfig:
    """The configuration an earlier run in ``run_dir`` started with."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --resume takes the folder of a run that "
                                "was started earlier")
    report = json.loads(path.read_text())
    if report.get("status") == "finished":
        raise ValueError(f"{run_dir}: that run finished already; nothing to resume")
    return dataclasses.replace(RunConfig.from_dict(report["config"]), run_dir=str(run_dir))


def prepare_run_dir(cfg: RunConfig, resume: bool = False) -> Path:
    """A fresh folder for this run; an existing one is kept unless ``overwrite``.
    Resuming, the run's own folder."""
    if resume:
        return Path(cfg.run_dir)
    if cfg.run_dir is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(cfg.runs_root) / f"spam-{cfg.model_size}-{stamp}"
        path, k = base, 1
        while path.exists():
            k += 1
            path = base.with_name(f"{base.name}-{k}")
    else:
        path = Path(cfg.run_dir)
        if path.exists() and any(path.iterdir()):
            if not cfg.overwrite:
                raise FileExistsError(f"run folder {path} exists and is not empty; pick another "
                                      "--run-dir or pass --overwrite")
            shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _backbone_files(cfg: RunConfig) -> tuple[dict, Path]:
    """``(settings, folder with hparams.json, the checkpoint and the BPE files)``,
    downloading GPT-2 first if needed; nothing heavy is read yet."""
    model_dir = Path(cfg.model_dir) if cfg.model_dir else None
    if cfg.weights == "random":
        if model_dir is not None and (model_dir / "hparams.json").is_file():
            return read_settings(model_dir), model_dir
        return settings_for_size(cfg.model_size), model_dir or Path(cfg.models_dir) / cfg.model_size
    if model_dir is None:
        model_dir = download_gpt2(cfg.model_size, cfg.models_dir, offline=cfg.offline or None)
    return read_settings(model_dir), model_dir


def run(cfg: RunConfig, log: Callable[[str], None] = print, *, resume: bool = False,
        on_step: Callable[[int], None] | None = None) -> dict:
    """Fine-tune and evaluate; returns the contents of ``metrics.json``. ``resume``:
    go on from the last epoch saved in ``cfg.run_dir`` (see ``resume_config``)."""
    started = time.perf_counter()
    run_dir = prepare_run_dir(cfg, resume)
    log(f"run folder: {run_dir}" + (" (resuming)" if resume else ""))
    tc = cfg.train

    # ---- data first: cheap, and its errors should come before loading 500 MB ----
    data_file = Path(cfg.data_file) if cfg.data_file else sms.fetch_sms_spam(
        cfg.data_dir, offline=cfg.offline or None)
    df = sms.read_sms_spam(data_file)
    splits = sms.split(df, cfg.train_size, cfg.val_size, cfg.test_size, tc.seed, cfg.balance)

    settings, model_dir = _backbone_files(cfg)
    log(f"settings: {settings}")
    log("config mapping: " + ", ".join(f"{k} -> {v}" for k, v in OPENAI_TO_CONFIG.items()))
    model_cfg = GPTConfig.from_settings(settings, num_classes=2, drop_rate=cfg.drop_rate)
    log(f"model config: {model_cfg}")

    tokenizer = get_tokenizer(model_dir)
    encoded, length = sms.encode_splits(splits, tokenizer, model_cfg.context_length,
                                        cfg.max_length, vocab_size=model_cfg.vocab_size)
    data_info = {"file": str(data_file), "rows": len(df), "max_length": length, "splits": {}}
    for name, split in encoded.items():
        counts = np.bincount(split.labels, minlength=2).tolist()
        data_info["splits"][name] = {"n": len(split), "ham": counts[0], "spam": counts[1],
                                     "truncated": split.truncated}
        log(f"{name:5}: {len(split):5} messages ({counts[0]} ham / {counts[1]} spam)"
            + (f", {split.truncated} truncated to {length} tokens" if split.truncated else ""))
    batches = len(encoded["train"]) // tc.batch_size
    data_info["batches_per_epoch"] = batches
    log(f"padded to {length} tokens; batch {tc.batch_size} -> {batches} batches per epoch")
    log(memory_check(settings, sum(map(len, encoded.values())), length, tc.cache_prefix))

    # ---- weights: the heavy part ----
    pretrained = None
    if cfg.weights == "pretrained":
        log(f"loading GPT-2 from {model_dir}")
        settings, pretrained = load_gpt2(model_dir)
        log(f"params keys: {list(pretrained)} ({len(pretrained['blocks'])} blocks)")

    # ---- model and what trains ----
    has_pretrained = pretrained is not None
    params, from_init = with_class_head(load_weights(pretrained) if has_pretrained else None,
                                        model_cfg, tc.seed)
    del pretrained  # the NumPy copy: from here on only the JAX tree holds the weights
    if has_pretrained:
        log(f"from the checkpoint: all but {from_init} (new, seeded init)")
    trainable = tc.trainable or (default_trainable(model_cfg.n_layers)
                                 if has_pretrained else (".*",))
    counts = split_counts(params, trainable_labels(params, trainable))
    log(f"trainable patterns {list(trainable)}: {counts['trainable']:,} trainable / "
        f"{counts['frozen']:,} frozen parameters (total {count_params(params):,})")

    if tc.class_weights is None:
        weights = np.ones(2, np.float32)
    elif tc.class_weights:
        weights = np.asarray(tc.class_weights, np.float32)
    else:
        weights = class_weights_for(encoded["train"].labels)
    log(f"class weights (ham, spam): {weights.round(4).tolist()}")

    report = {
        "config": dataclasses.asdict(cfg), "seed": tc.seed, "settings": settings,
        "model_config": dataclasses.asdict(model_cfg), "data": data_info,
        "trainable_patterns": list(trainable), "parameters": counts,
        "class_weights": weights.tolist(), "backend": jax.default_backend(),
        "epochs": [], "status": "running",
    }
    checkpoints = EpochCheckpoints(run_dir / CHECKPOINTS_DIR, keep=cfg.keep_checkpoints)
    if resume:
        previous = json.loads((run_dir / "metrics.json").read_text())
        report["epochs"] = previous.get("epochs", [])
        report["resumed"] = previous.get("resumed", []) + [
            {"after_epoch": checkpoints.latest_epoch() or 0,
             "at": dt.datetime.now().isoformat(timespec="seconds")}]
    write_json(run_dir / "metrics.json", report)

    def on_epoch(history):
        report["epochs"] = history
        write_json(run_dir / "metrics.json", report)
        plot_history(history, run_dir)
        log(epoch_table(history[-1]))

    model = GPTModel(model_cfg)
    try:
        params, _ = fit(model, params, encoded, tc, weights, trainable, on_epoch=on_epoch,
                        log=log, checkpoints=checkpoints, resume=resume, on_step=on_step)
    except (NonFiniteError, KeyboardInterrupt) as err:
        kept = checkpoints.latest_epoch()
        where = (f"the last good state (epoch {kept}) is in {checkpoints.directory}; "
                 f"`python -m experiments.spam --resume {run_dir}` goes on from there"
                 if kept else "no epoch had finished, so no training state was saved")
        report["status"] = f"stopped: {str(err) or 'interrupted'}; {where}"
        write_json(run_dir / "metrics.json", report)
        err.add_note(where)
        raise
    finally:
        checkpoints.close()
    save_classifier(run_dir, params, model_cfg, max_length=length, pool=tc.pool,
                    bpe_dir=model_dir)
    report["status"] = "finished"
    report["total_seconds"] = time.perf_counter() - started
    report["peak_memory_gib"] = peak_memory_bytes() / GIB
    write_json(run_dir / "metrics.json", report)
    log(f"done in {report['total_seconds']:.1f} s (peak memory {report['peak_memory_gib']:.2f} "
        f"GiB); metrics.json, plots and the classifier "
        f"are in {run_dir}")
    return report
