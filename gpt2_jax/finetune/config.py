"""The settings of a run: one frozen dataclass per group; every command-line flag is one field (``finetune.cli`` makes the flags from them), so each setting is written once."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from gpt2_jax.data import tables
from gpt2_jax.data.encoding import TRUNCATIONS, check_truncate
from gpt2_jax.model.config import MODEL_SIZES, GPTConfig, settings_for_size
from gpt2_jax.model.pooling import POOLS, check_pool
from gpt2_jax.parallel.mesh import Placement, make_mesh, parse_mesh
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.util.typed import check_field_types

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
        check_field_types(self)
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
    drop_duplicates: bool = field(
        default=False,
        metadata={
            "help": "leave out of validation and test the rows whose text is also a training "
            "(or, for test, a validation) text; the run counts such rows either way"
        },
    )
    max_length: int | str = field(
        default="longest",
        metadata={
            "parse": _length,
            "metavar": "longest|context|N",
            "help": "pad/truncate to the longest training text, the model's context, or N tokens",
        },
    )
    truncate: str = field(
        default="head",
        metadata={
            "choices": list(TRUNCATIONS),
            "help": "what a text longer than --max-length keeps: its first tokens (the "
            "lab's), its last, or the first half and the last half; saved with the classifier",
        },
    )
    data_dir: str = field(
        default="data", metadata={"help": "download cache for the SMS Spam Collection"}
    )

    def __post_init__(self):
        labels = self.labels
        if isinstance(labels, (list, tuple)) and all(isinstance(x, str) for x in labels):
            object.__setattr__(self, "labels", ",".join(labels))  # the Python API's natural form
        check_field_types(self)
        if isinstance(self.test_size, str) and self.test_size != "rest":
            raise ValueError(
                f"test_size must be a count, a fraction or 'rest', got {self.test_size!r}"
            )
        for name in ("train_size", "val_size", "test_size"):
            value = getattr(self, name)
            if isinstance(value, float) and not (math.isfinite(value) and 0 < value < 1):
                raise ValueError(f"{name} must be a count or a fraction in (0, 1), got {value}")
            if isinstance(value, int) and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        if isinstance(self.max_length, int) and self.max_length <= 0:
            raise ValueError(f"max_length must be positive, got {self.max_length}")
        check_truncate(self.truncate)
        if isinstance(self.max_length, str) and self.max_length not in ("longest", "context"):
            raise ValueError(
                f"max_length must be 'longest', 'context' or a number, got {self.max_length!r}"
            )

    def class_order(self) -> tuple[str, ...] | None:
        return None if self.labels == "sorted" else tuple(self.labels.split(","))

    def holdout_row(self) -> int | None:
        """Where validation and test are cut from the shuffle: with the default
        --val-size and --test-size, at the default train size's row (the lab's layout),
        whatever --train-size, so runs that change only that test on the same rows;
        otherwise (None) right after the training rows, as in stratified cuts."""
        default = {f.name: f.default for f in dataclasses.fields(DataConfig)}
        sizes = ("val_size", "test_size")
        if self.stratify or any(getattr(self, k) != default[k] for k in sizes):
            return None
        train = default["train_size"]
        assert isinstance(train, int)
        return train


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
        check_field_types(self)
        parse_mesh(self.mesh)  # the flag's form; the devices are counted when the run starts
        budget = self.memory_budget_gib
        if budget != "available" and (
            isinstance(budget, str) or not (math.isfinite(budget) and budget > 0)
        ):
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
        check_field_types(self)
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
        check_field_types(self)
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
            group: Any = type(f.default)  # every section's default is an instance of its class
            known = {g.name for g in dataclasses.fields(group)}
            unknown = sorted(set(sub) - set(known))
            if unknown:
                raise ValueError(f"config section {f.name!r} has unknown setting(s) {unknown}")
            for key, value in sub.items():
                if isinstance(value, list):
                    sub[key] = tuple(value)
            groups[f.name] = group(**sub)
        unknown = sorted(set(d) - set(groups))
        if unknown:
            raise ValueError(f"config has unknown section(s) {unknown}")
        return cls(**groups)


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
