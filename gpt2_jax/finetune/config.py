"""The settings of a run: one frozen dataclass per group (``DataConfig`` and ``SpeedConfig``
in modules of their own, importable from here); every command-line flag is one field (``finetune.cli`` makes the flags from them), so each setting is written once."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from gpt2_jax.finetune.data_config import DataConfig
from gpt2_jax.finetune.speed_config import SpeedConfig
from gpt2_jax.model.config import MODEL_SIZES, GPTConfig, settings_for_size
from gpt2_jax.model.pooling import POOLS, check_pool
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.util.typed import check_field_types

field = dataclasses.field

TRACKERS = ("tensorboard", "mlflow")  # --log-to (gpt2_jax.finetune.tracking)


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

    log_to: tuple[str, ...] = field(
        default=(),
        metadata={
            "metavar": "TRACKER",
            "help": "also log the run to " + " or ".join(TRACKERS) + " (repeat the flag, or "
            "tensorboard,mlflow; docs/tracking.md); needs the 'track' extra",
        },
    )
    mlflow_uri: str | None = field(
        default=None,
        metadata={
            "metavar": "URI",
            "help": "MLflow tracking URI for --log-to mlflow (default: MLFLOW_TRACKING_URI, "
            "else a SQLite file mlflow.db in the run folder's parent)",
        },
    )

    def __post_init__(self):
        if isinstance(self.log_to, str | list):  # one word, or a list from JSON
            log_to = (self.log_to,) if isinstance(self.log_to, str) else tuple(self.log_to)
            object.__setattr__(self, "log_to", log_to)
        check_field_types(self)
        names = [n.strip() for item in self.log_to for n in item.split(",") if n.strip()]
        object.__setattr__(self, "log_to", tuple(dict.fromkeys(names)))  # tensorboard,mlflow
        unknown = [n for n in self.log_to if n not in TRACKERS]
        if unknown:
            raise ValueError(
                f"--log-to {','.join(unknown)}: unknown tracker; use " + " or ".join(TRACKERS)
            )
        if self.mlflow_uri is not None and "mlflow" not in self.log_to:
            raise ValueError("--mlflow-uri is where --log-to mlflow logs; give --log-to mlflow too")
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
