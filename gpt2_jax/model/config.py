"""Model configuration: the book's names, OpenAI's sizes, and the mapping between them.

OpenAI's ``hparams.json`` (the lab's ``settings``) uses ``n_vocab, n_ctx, n_embd,
n_head, n_layer``; the book and this package use ``vocab_size, context_length,
emb_dim, n_heads, n_layers``. ``OPENAI_TO_CONFIG`` is the one place that says which
is which.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gpt2_jax.util.typed import check_field_types

# How attention is computed: the CPU-friendly blocked code, jax.nn.dot_product_attention
# (cuDNN's fused attention on GPUs), or "auto" (fused on GPUs, blocked elsewhere).
ATTENTION = ("auto", "blocked", "fused")

# OpenAI hparams key -> GPTConfig field.
OPENAI_TO_CONFIG: dict[str, str] = {
    "n_vocab": "vocab_size",
    "n_ctx": "context_length",
    "n_embd": "emb_dim",
    "n_head": "n_heads",
    "n_layer": "n_layers",
}

# The four released models, in OpenAI's own hparams form (what hparams.json holds).
MODEL_SIZES: dict[str, dict[str, int]] = {
    "124M": {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12},
    "355M": {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 1024, "n_head": 16, "n_layer": 24},
    "774M": {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 1280, "n_head": 20, "n_layer": 36},
    "1558M": {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 1600, "n_head": 25, "n_layer": 48},
}


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Sizes of a GPT-2 model.

    ``num_classes=None`` gives the language model (output head tied to ``wte``);
    an integer replaces that head by a fresh ``Dense(num_classes)`` named ``head``.
    """

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.0
    qkv_bias: bool = True  # OpenAI's checkpoints have query/key/value biases
    num_classes: int | None = None
    matmul_dtype: str | None = None  # "bfloat16": bf16 matmul inputs, float32 accumulation
    causal: bool = True  # False: every position sees every other (the book's row 17)
    lora_rank: int = 0  # > 0: low-rank adapters on the blocks' linear layers
    lora_alpha: float = 16.0  # the adapters' output is scaled by lora_alpha / lora_rank
    lora_blocks: int = 0  # adapters in the last lora_blocks blocks only (0: all blocks)
    attention: str = "auto"  # "blocked" (CPU-friendly), "fused" (jax.nn.dot_product_attention), auto: fused on GPUs

    def __post_init__(self):
        check_field_types(self)
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.emb_dim % self.n_heads:
            raise ValueError(
                f"GPTConfig.emb_dim={self.emb_dim} is not divisible by n_heads={self.n_heads}"
            )
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"GPTConfig.drop_rate must be in [0, 1), got {self.drop_rate}")
        if self.matmul_dtype not in (None, "float32", "bfloat16", "float16"):
            raise ValueError(
                f"GPTConfig.matmul_dtype must be float32, bfloat16 or float16, "
                f"got {self.matmul_dtype!r}"
            )
        if not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise ValueError(f"GPTConfig.lora_rank must be an int >= 0, got {self.lora_rank!r}")
        if not isinstance(self.lora_blocks, int) or not 0 <= self.lora_blocks <= self.n_layers:
            raise ValueError(
                f"GPTConfig.lora_blocks must be in [0, n_layers={self.n_layers}] "
                f"(0: all), got {self.lora_blocks!r}"
            )
        if self.lora_rank and not self.lora_alpha > 0:
            raise ValueError(f"GPTConfig.lora_alpha must be > 0, got {self.lora_alpha}")
        if self.attention not in ATTENTION:
            raise ValueError(
                f"GPTConfig.attention must be one of {ATTENTION}, got {self.attention!r}"
            )
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"GPTConfig.num_classes must be >= 2, got {self.num_classes}")

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def has_lora(self, block: int) -> bool:
        """Whether block ``block`` carries LoRA adapters."""
        first = self.n_layers - (self.lora_blocks or self.n_layers)
        return self.lora_rank > 0 and block >= first

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **overrides: Any) -> GPTConfig:
        """Build a config from OpenAI's hparams dict, then apply ``overrides``.

        Unknown extra keys in ``settings`` are ignored; a missing one is an error.
        """
        missing = [key for key in OPENAI_TO_CONFIG if key not in settings]
        if missing:
            raise KeyError(
                f"settings lack {missing}; expected OpenAI hparams keys {list(OPENAI_TO_CONFIG)}"
            )
        fields: dict[str, Any] = {
            ours: int(settings[theirs]) for theirs, ours in OPENAI_TO_CONFIG.items()
        }
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_size(cls, model_size: str, **overrides: Any) -> GPTConfig:
        """Config of one of OpenAI's released sizes ("124M", "355M", "774M", "1558M")."""
        return cls.from_settings(settings_for_size(model_size), **overrides)

    def to_settings(self) -> dict[str, int]:
        """The inverse mapping: this config as OpenAI's hparams dict."""
        return {theirs: getattr(self, ours) for theirs, ours in OPENAI_TO_CONFIG.items()}


def settings_for_size(model_size: str) -> dict[str, int]:
    if model_size not in MODEL_SIZES:
        raise ValueError(
            f"unknown GPT-2 model size {model_size!r}; choose one of {list(MODEL_SIZES)}"
        )
    return dict(MODEL_SIZES[model_size])
