"""A fine-tuning run end to end: GPT-2 + labelled text -> classifier + report in a run folder.

``run(RunConfig(...))`` is what ``python -m experiments.spam`` (the lab: its defaults)
and ``python -m experiments.finetune`` (your own data) call. Every command-line flag is
a field of one of the config dataclasses below (``gpt2_jax.finetune.cli`` makes the flags from
them), so each setting is written once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gpt2_jax.classifier.classifier import ClassifierConfig, save_classifier, with_class_head
from gpt2_jax.data import sms, tables
from gpt2_jax.data.tokenizer import get_tokenizer
from gpt2_jax.finetune.report import epoch_table, plot_history, write_json
from gpt2_jax.model.config import MODEL_SIZES, OPENAI_TO_CONFIG, GPTConfig, settings_for_size
from gpt2_jax.model.gpt import GPTModel, merge_lora
from gpt2_jax.model.pooling import POOLS, check_pool, reads_padding
from gpt2_jax.parallel.distributed import is_main, several, share_outcome
from gpt2_jax.parallel.mesh import Placement, describe, make_mesh, parse_mesh
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

field = dataclasses.field


def _size(text: str) -> int | float:
    """A split size: a count (``500``, ``0``) or a fraction of the rows (``0.1``); a
    number written with a point or an exponent is a fraction (``1.0`` is not one row)."""
    return int(text) if text.strip().lstrip("+-").isdigit() else float(text)


def _size_or_rest(text: str) -> int | float | str:
    """A size, or ``rest`` (``all``, the lab's old word, means the same)."""
    return "rest" if text in ("rest", "all") else _size(text)


def _length(text: str) -> int | str:
    return text if text in ("longest", "context") else int(text)


def _budget(text: str) -> float | str:
    return text if text == "available" else float(text)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which GPT-2 and what kind of classifier on top."""

    model_size: str = field(default="124M", metadata={"choices": list(MODEL_SIZES)})
    models_dir: str = field(
        default="models",
        metadata={"help": "cache of GPT-2 folders; files are downloaded into MODELS_DIR/SIZE"},
    )
    model_dir: str | None = field(
        default=None,
        metadata={
            "help": "use this GPT-2 folder as it is: OpenAI's (hparams.json, model.ckpt.*, "
            "encoder.json, vocab.bpe) or Hugging Face's (config.json, model.safetensors, "
            "vocab.json, merges.txt); any n_layer/n_embd/n_head its config states"
        },
    )
    hf_repo: str | None = field(
        default=None,
        metadata={
            "metavar": "ID",
            "help": "fetch GPT-2 from the Hugging Face Hub by repo id (e.g. "
            "openai-community/gpt2) into the hub's cache; needs the 'hub' extra",
        },
    )
    hf_revision: str = field(
        default="main",
        metadata={
            "metavar": "REV",
            "help": "branch, tag or commit hash of --hf-repo (pin a commit for repeatable runs)",
        },
    )
    weights: str = field(
        default="pretrained",
        metadata={
            "choices": ["pretrained", "random"],
            "help": "random: GPT-2's sizes with random init; then every layer trains unless "
            "--trainable says otherwise",
        },
    )
    drop_rate: float = field(default=0.0, metadata={"help": "dropout while training"})
    pool: str = field(
        default="last",
        metadata={
            "choices": list(POOLS),
            "help": "what the head reads: the last position (the lab's), "
            "the last real token, the first token, or the mean over the real tokens; saved with "
            "the classifier",
        },
    )
    offline: bool = field(
        default=False, metadata={"help": "never touch the network; fail if a file is missing"}
    )
    causal_mask: bool = field(
        default=True,
        metadata={
            "flag": "--disable-causal-mask",
            "help": "GPT-2's causal attention mask; off, every "
            "token sees every other, padding included (the book's row 17)",
        },
    )
    lora_rank: int = field(
        default=0,
        metadata={
            "metavar": "R",
            "help": "rank of LoRA adapters on the blocks' linear layers (0: none); train them "
            "with --trainable lora",
        },
    )
    lora_alpha: float = field(
        default=16.0,
        metadata={
            "metavar": "ALPHA",
            "help": "the adapters' output is scaled by alpha / rank (the "
            "book scales by alpha: pass its alpha times the rank to match it)",
        },
    )
    lora_blocks: int = field(
        default=0,
        metadata={
            "metavar": "K",
            "help": "adapters in the last K blocks only (0: all blocks); the "
            "blocks before them are a frozen prefix, computed once",
        },
    )

    def __post_init__(self):
        if self.weights not in ("pretrained", "random"):
            raise ValueError(f"weights must be 'pretrained' or 'random', got {self.weights!r}")
        settings_for_size(self.model_size)  # raises on an unknown size
        check_pool(self.pool)
        if not 0.0 <= self.drop_rate < 1.0:  # also false for NaN
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")
        if self.hf_repo is not None and self.model_dir is not None:
            raise ValueError("give --model-dir or --hf-repo, not both")
        if self.hf_repo is not None and not self.hf_repo.strip("/ "):
            raise ValueError("--hf-repo needs a repo id such as openai-community/gpt2")
        if self.hf_revision != "main" and self.hf_repo is None:
            raise ValueError("--hf-revision pins a revision of --hf-repo; give --hf-repo too")
        if self.lora_rank < 0 or self.lora_blocks < 0:
            raise ValueError(
                f"lora_rank and lora_blocks must be >= 0, got {self.lora_rank} "
                f"and {self.lora_blocks}"
            )
        if not (math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
            raise ValueError(f"lora_alpha must be a positive number, got {self.lora_alpha}")

    def gpt_config(self, settings: dict, num_classes: int) -> GPTConfig:
        """The model these options describe, on top of a checkpoint's ``settings``."""
        if self.lora_blocks > int(settings["n_layer"]):
            raise ValueError(
                f"--lora-blocks {self.lora_blocks}: the model has only {settings['n_layer']} blocks"
            )
        return GPTConfig.from_settings(
            settings,
            num_classes=num_classes,
            drop_rate=self.drop_rate,
            causal=self.causal_mask,
            lora_rank=self.lora_rank,
            lora_alpha=self.lora_alpha,
            lora_blocks=self.lora_blocks,
        )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the labelled texts come from and how they are split and encoded."""

    data_file: str | None = field(
        default=None,
        metadata={
            "help": "labelled texts: CSV/TSV with a header, JSON Lines, Parquet, or the SMS "
            "Spam Collection (default: the SMS collection, downloaded into DATA_DIR)"
        },
    )
    data_format: str = field(
        default="auto",
        metadata={
            "flag": "--format",
            "choices": ["auto", *tables.FORMATS],
            "help": "auto: by the file's extension (SMSSpamCollection: sms)",
        },
    )
    quoting: str = field(
        default="pandas",
        metadata={
            "choices": list(tables.SMS_QUOTING),
            "help": "SMS format only: 'pandas' reads as the lab does (a message starting with a "
            "quote runs on to the next quote; every such join is logged), 'none' takes one "
            "message per line",
        },
    )
    text_column: str = field(default="text", metadata={"help": "column holding the text"})
    label_column: str = field(default="label", metadata={"help": "column holding the class"})
    labels: str = field(
        default="sorted",
        metadata={
            "metavar": "sorted|A,B,...",
            "help": "class order (class ids): 'sorted' = integer "
            "labels in numeric order, other labels in string order; or the names in order",
        },
    )
    val_file: str | None = field(
        default=None,
        metadata={"help": "validation texts from their own file (then --val-size is not cut)"},
    )
    test_file: str | None = field(
        default=None,
        metadata={"help": "test texts from their own file (then --test-size is not cut)"},
    )
    train_size: int | float = field(
        default=2000,
        metadata={"parse": _size, "help": "training rows: a count or a fraction (0.8)"},
    )
    val_size: int | float = field(default=500, metadata={"parse": _size})
    test_size: int | float | str = field(
        default=1000,
        metadata={
            "parse": _size_or_rest,
            "help": "a count, a fraction, or 'rest' (every row after training and validation)",
        },
    )
    stratify: bool = field(
        default=False,
        metadata={"help": "cut every split with the class proportions of the whole file"},
    )
    balance: bool = field(
        default=False,
        metadata={"help": "undersample every class to the rarest one before splitting"},
    )
    max_length: int | str = field(
        default="longest",
        metadata={
            "parse": _length,
            "metavar": "longest|context|N",
            "help": "pad/truncate to the longest training text, the model's context, or N tokens",
        },
    )
    data_dir: str = field(
        default="data", metadata={"help": "download cache for the SMS Spam Collection"}
    )

    def __post_init__(self):
        if isinstance(self.labels, (list, tuple)):  # the Python API's natural form
            object.__setattr__(self, "labels", ",".join(self.labels))
        for name in ("train_size", "val_size", "test_size"):
            value = getattr(self, name)
            if isinstance(value, float) and not (math.isfinite(value) and 0 < value < 1):
                raise ValueError(f"{name} must be a count or a fraction in (0, 1), got {value}")
            if isinstance(value, int) and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        if isinstance(self.max_length, int) and self.max_length <= 0:
            raise ValueError(f"max_length must be positive, got {self.max_length}")
        if isinstance(self.max_length, str) and self.max_length not in ("longest", "context"):
            raise ValueError(
                f"max_length must be 'longest', 'context' or a number, got {self.max_length!r}"
            )

    def class_order(self) -> tuple[str, ...] | None:
        return None if self.labels == "sorted" else tuple(self.labels.split(","))


@dataclasses.dataclass(frozen=True)
class SpeedConfig:
    """How the computation is organised; all exact except --prefix-dtype bfloat16."""

    prefix_cache: bool = field(
        default=True,
        metadata={
            "flag": "--no-prefix-cache",
            "help": "recompute the frozen blocks every step (the "
            "book's way) instead of once per text",
        },
    )
    pooled_only: bool = field(
        default=True,
        metadata={
            "flag": "--full-logits",
            "help": "compute every position in the last block, not just the pooled one",
        },
    )
    buckets: bool = field(
        default=True,
        metadata={
            "flag": "--no-buckets",
            "help": "with a pool that reads only real tokens (last-real, "
            "first, mean), still pad every batch to the full length",
        },
    )
    prefix_dtype: str = field(
        default="float32",
        metadata={
            "choices": ["float32", "bfloat16"],
            "help": "matmul inputs of the frozen prefix (bfloat16: float32 accumulation)",
        },
    )
    train_dtype: str = field(
        default="float32",
        metadata={
            "choices": ["float32", "bfloat16"],
            "help": "matmul inputs of the trained blocks (bfloat16: float32 accumulation, and "
            "the weights, gradients and Adam state stay float32)",
        },
    )
    attention: str = field(
        default="auto",
        metadata={
            "choices": ["auto", "blocked", "fused"],
            "help": "how attention is computed: blocked (the CPU's fastest here), fused "
            "(jax.nn.dot_product_attention: cuDNN flash attention on GPUs), auto: fused on GPUs",
        },
    )
    prefix_cache_dir: str | None = field(
        default=None,
        metadata={
            "metavar": "DIR",
            "help": "keep the frozen-prefix outputs in DIR (2.8 GB for the "
            "lab's splits at 124M), keyed by weights, data and length, so a rerun skips that pass",
        },
    )
    prefix_storage: str = field(
        default="auto",
        metadata={
            "choices": ["auto", "memory", "disk"],
            "help": "where the frozen-prefix outputs live: disk = memory-mapped files in the run "
            "folder; auto = disk when the memory estimate exceeds --memory-budget-gib",
        },
    )
    mesh: str = field(
        default="",
        metadata={
            "metavar": "data=N,fsdp=M",
            "help": "lay training over the devices: batch rows split "
            "over data x fsdp, large weights (and their gradients and Adam state) cut over fsdp; "
            "the sizes multiply to the device count (default: every device on data; one device: "
            "no mesh at all)",
        },
    )
    memory_budget_gib: float | str = field(
        default="available",
        metadata={
            "parse": _budget,
            "metavar": "available|GIB",
            "help": "memory the run may use, for --prefix-storage auto",
        },
    )

    def __post_init__(self):
        parse_mesh(self.mesh)  # the flag's form; the devices are counted when the run starts
        budget = self.memory_budget_gib
        if budget != "available" and not (math.isfinite(budget) and budget > 0):
            raise ValueError(
                f"memory_budget_gib must be 'available' or a positive number of GiB, got {budget}"
            )

    def matmul_dtype(self) -> str | None:
        return None if self.prefix_dtype == "float32" else self.prefix_dtype

    def placement(self) -> Placement | None:
        """Where training runs: None on a single device (and no --mesh), else the mesh."""
        mesh = make_mesh(self.mesh)
        return None if mesh.size == 1 else Placement(mesh)


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """Where the run folder goes."""

    runs_root: str = field(default="runs", metadata={"help": "run folders go here"})
    run_dir: str | None = field(
        default=None, metadata={"help": "the run folder (default: RUNS_ROOT/<data>-<size>-<time>)"}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --run-dir"})
    keep_checkpoints: int = field(
        default=2,
        metadata={
            "metavar": "K",
            "help": "keep the training state of the last K epochs in "
            "RUN_DIR/checkpoints (trainable weights and Adam state: 80 MB each at 124M)",
        },
    )
    merge_lora: bool = field(
        default=False,
        metadata={
            "help": "save the classifier with the LoRA adapters folded into the weights (a "
            "plain GPT-2 classifier; predictions agree to float rounding)"
        },
    )

    def __post_init__(self):
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be at least 1, got {self.keep_checkpoints}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    speed: SpeedConfig = SpeedConfig()
    output: OutputConfig = OutputConfig()

    def __post_init__(self):
        d, t = self.data, self.train
        if (self.output.merge_lora or self.model.lora_blocks) and not self.model.lora_rank:
            raise ValueError(
                "--merge-lora and --lora-blocks need LoRA adapters: give "
                "--lora-rank R with --trainable lora"
            )
        if ("lora" in t.trainable) != (self.model.lora_rank > 0):
            raise ValueError(
                "--trainable lora needs --lora-rank R (the book uses 16), and "
                "--lora-rank needs --trainable lora (untrained adapters are "
                "zero and change nothing)"
            )
        if isinstance(d.train_size, int) and d.train_size < t.batch_size:
            raise ValueError(
                f"train_size {d.train_size} < batch_size {t.batch_size}: with the incomplete "
                "last batch dropped, an epoch would have no steps"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Inverse of ``to_dict`` (as stored in ``metrics.json`` and ``config.json``);
        unknown keys are an error naming them."""
        groups = {}
        for f in dataclasses.fields(cls):
            sub = dict(d.get(f.name, {}))
            known = {g.name for g in dataclasses.fields(type(f.default))}
            unknown = sorted(set(sub) - set(known))
            if unknown:
                raise ValueError(f"config section {f.name!r} has unknown setting(s) {unknown}")
            for key, value in sub.items():
                if isinstance(value, list):
                    sub[key] = tuple(value)
            groups[f.name] = type(f.default)(**sub)
        unknown = sorted(set(d) - set(groups))
        if unknown:
            raise ValueError(f"config has unknown section(s) {unknown}")
        return cls(**groups)


def resume_config(run_dir: str | os.PathLike) -> RunConfig:
    """The configuration an earlier run in ``run_dir`` started with."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: --resume takes the folder of a run that was started earlier"
        )
    try:
        report = json.loads(path.read_text())
        status, saved = report.get("status"), report["config"]
    except (json.JSONDecodeError, KeyError, AttributeError) as err:
        raise ValueError(
            f"{path}: not the metrics.json of a run ({err!r}); cannot resume from it"
        ) from None
    if status == "finished":
        raise ValueError(f"{run_dir}: that run finished already; nothing to resume")
    cfg = RunConfig.from_dict(saved)
    return dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, run_dir=str(run_dir)))


def load_config(path: str | os.PathLike) -> RunConfig:
    """A saved run's configuration: its ``config.json`` or ``metrics.json`` (or the folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"--config {path}: no such file (give a run folder, its "
            "config.json or its metrics.json)"
        )
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"--config {path}: not JSON ({err})") from None
    cfg = RunConfig.from_dict(d.get("config", d))
    # a rerun gets a folder of its own: never the saved run's, never overwriting
    return dataclasses.replace(
        cfg, output=dataclasses.replace(cfg.output, run_dir=None, overwrite=False)
    )


def run_name(cfg: RunConfig) -> str:
    d = cfg.data
    stem = (
        "spam"
        if d.data_file is None
        or d.data_format == "sms"
        or Path(d.data_file).name == sms.SMS_FILE_NAME
        else Path(d.data_file).stem
    )
    return f"{stem}-{cfg.model.model_size}"


LOCK_FILE = ".lock"


class RunFolderLock:
    """An exclusive ``flock`` on ``RUN_DIR/.lock`` for as long as a run uses the folder.

    The kernel drops it when the process ends, however it ends (SIGKILL included), so a
    killed run can be resumed at once, while a second run aimed at a folder in use stops
    before touching anything."""

    def __init__(self, folder: Path):
        import fcntl

        self.path = folder / LOCK_FILE
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 200, 0).decode(errors="replace").strip()
            os.close(self._fd)
            raise FileExistsError(
                f"run folder {folder} is in use by another run ({holder}); "
                "wait for it to end or pick another --run-dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(
            self._fd, f"pid {os.getpid()} since {dt.datetime.now():%Y-%m-%d %H:%M:%S}".encode(), 0
        )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def _make_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--run-dir {path} is a file, not a folder; pick another --run-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(
            err.errno,
            f"cannot create the run folder {path}: {err.strerror}; "
            "pick a writable --run-dir or --runs-root",
        ) from None


def prepare_run_dir(cfg: RunConfig, resume: bool = False) -> tuple[Path, RunFolderLock]:
    """A fresh folder for this run, claimed with a lock; an existing non-empty one is
    kept unless ``overwrite`` (and never taken from a run that holds it). Resuming,
    the run's own folder."""
    out = cfg.output
    if resume:
        path = Path(out.run_dir)
        return path, RunFolderLock(path)
    if out.run_dir is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(out.runs_root) / f"{run_name(cfg)}-{stamp}"
        path, k = base, 1
        while path.exists():
            k += 1
            path = base.with_name(f"{base.name}-{k}")
    else:
        path = Path(out.run_dir)
    _make_folder(path)
    lock = RunFolderLock(path)
    others = [p for p in path.iterdir() if p.name != LOCK_FILE]
    if others:
        problem = None
        if not out.overwrite:
            problem = "exists and is not empty; pick another --run-dir or pass --overwrite"
        elif not (path / "metrics.json").is_file():
            problem = (
                "is not an earlier run's folder (no metrics.json), so --overwrite will "
                "not empty it; pick another --run-dir"
            )
        else:
            inputs = [
                Path(f).resolve()
                for f in (
                    cfg.data.data_file,
                    cfg.data.val_file,
                    cfg.data.test_file,
                    cfg.model.model_dir,
                )
                if f
            ]
            inside = [str(f) for f in inputs if f.is_relative_to(path.resolve())]
            if inside:
                problem = (
                    f"holds this run's input {', '.join(inside)}, so --overwrite will "
                    "not empty it; pick another --run-dir"
                )
        if problem:
            lock.release()
            raise FileExistsError(f"run folder {path} {problem}")
        for p in others:  # the lock stays: this run holds it
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    return path, lock


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
    return merge(frozen, best if select else state.trainable), history


def _prefix_storage(
    cfg: RunConfig, settings: dict, n_texts: int, length: int, log: Callable[[str], None]
) -> str:
    """``memory`` or ``disk`` for the frozen-prefix outputs, said in the log."""
    s = cfg.speed
    if not s.prefix_cache or s.prefix_storage != "auto":
        return s.prefix_storage if s.prefix_storage != "auto" else "memory"
    need = estimate_peak_bytes(settings, n_texts, length, True)
    budget = available_bytes() if s.memory_budget_gib == "available" else s.memory_budget_gib * GIB
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
    return lambda: signal.signal(signal.SIGTERM, previous)


def _record_stop(
    report: dict, run_dir: Path, checkpoints: EpochCheckpoints, cfg: RunConfig, err: BaseException
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
    report["status"] = f"stopped: {reason}; {where}"
    try:
        write_json(run_dir / "metrics.json", report)
    except OSError:
        pass
    err.add_note(where)


def _quiet(*_) -> None:
    """The log of processes other than 0."""


class _NoLock:
    """Processes other than 0 hold no lock on the run folder: process 0 does."""

    def release(self) -> None:
        pass


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
    max_length = {"longest": None, "context": model_cfg.context_length}.get(
        cfg.data.max_length, cfg.data.max_length
    )
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

    try:
        run_dir, lock = (
            prepare_run_dir(cfg, resume)
            if main
            else (Path(cfg.output.run_dir).resolve(), _NoLock())
        )
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
        data_info = {
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
            report = {
                "run_dir": str(run_dir),
                "config": cfg.to_dict(),
                "settings": settings,
                "backbone": backbone,
                "data": data_info,
                "epochs": [],
                "status": "checked: --epochs 0 reads and splits the data only; nothing "
                "was trained and no classifier was saved",
            }
            if main:
                write_json(run_dir / "metrics.json", report)
            log(report["status"])
            return report

        # ---- weights: the heavy part ----
        pretrained = None
        if m.weights == "pretrained":
            log(f"loading GPT-2 from {model_dir}")
            settings, pretrained = load_pretrained(model_dir)
            log(f"params keys: {list(pretrained)} ({len(pretrained['blocks'])} blocks)")
        has_pretrained = pretrained is not None
        params, from_init = with_class_head(
            load_weights(pretrained) if has_pretrained else None, model_cfg, tc.seed
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

        report = {
            "run_dir": str(run_dir),
            "config": cfg.to_dict(),
            "seed": tc.seed,
            "settings": settings,
            "backbone": backbone,
            "model_config": dataclasses.asdict(model_cfg),
            "data": data_info,
            "trainable_patterns": list(patterns),
            "parameters": counts,
            "class_weights": weights.tolist(),
            "backend": jax.default_backend(),
            "prefix_storage": storage,
            "epochs": [],
            "status": "running",
        }
        checkpoints = EpochCheckpoints(run_dir / CHECKPOINTS_DIR, keep=cfg.output.keep_checkpoints)
        if resume:
            previous = json.loads((run_dir / "metrics.json").read_text())
            report["epochs"] = previous.get("epochs", [])
            report["resumed"] = previous.get("resumed", []) + [
                {"after_epoch": 0, "at": dt.datetime.now().isoformat(timespec="seconds")}
            ]

        def on_resume(restored: Restored) -> None:  # called only when resuming
            report["resumed"][-1].update(
                after_epoch=restored.meta["epoch"],
                skipped=[{"epoch": e, "why": why} for e, why in restored.skipped],
            )
            report["epochs"] = restored.meta["history"]

        if main:
            write_json(run_dir / "metrics.json", report)
            write_json(run_dir / "config.json", cfg.to_dict())

        def on_epoch(history):
            report["epochs"] = history
            if main:
                write_json(run_dir / "metrics.json", report)
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
            chosen = best_epoch(report["epochs"], tc.select_by)
            report["selected"] = {"epoch": chosen, "by": tc.select_by}
            if tc.select_by != "last":
                report["selected"]["value"] = epoch_score(
                    report["epochs"][chosen - 1], tc.select_by
                )
                log(
                    f"the classifier keeps epoch {chosen}: best {tc.select_by} "
                    f"{report['selected']['value']:.4f}"
                )
            report["stopped_early"] = report["epochs"][-1]["epoch"] < tc.epochs
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
        report["status"] = "finished"
        report["total_seconds"] = time.perf_counter() - started
        report["peak_memory_gib"] = peak_memory_bytes() / GIB
        if main:
            write_json(run_dir / "metrics.json", report)
        log(
            f"done in {report['total_seconds']:.1f} s (peak memory {report['peak_memory_gib']:.2f} "
            f"GiB); metrics.json, plots and the classifier are in {run_dir}"
        )
        return report
    finally:
        lock.release()
        stop_on_sigterm()
