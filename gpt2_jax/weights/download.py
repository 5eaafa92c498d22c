"""GPT-2's seven files from OpenAI's server (verified, resumable: see ``util.fetch``)."""

from __future__ import annotations

import os
from pathlib import Path

from gpt2_jax.data.tokenizer import GPT2_BPE, GPT2_BPE_MIRROR
from gpt2_jax.model.config import MODEL_SIZES
from gpt2_jax.util.fetch import Expected, fetch_all
from gpt2_jax.weights.openai import load_gpt2

GPT2_BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models"
GPT2_FILES = (
    "checkpoint",
    "encoder.json",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
    "vocab.bpe",
)
# model.ckpt.data-00000-of-00001 holds every variable as float32 and nothing else:
# 4 bytes x the parameter count of each size (tests check the table against the
# model's shapes, and a TF-written 124M file against the first entry).
GPT2_DATA_BYTES = {
    "124M": 497_759_232,
    "355M": 1_419_292_672,
    "774M": 3_096_120_320,
    "1558M": 6_230_444_800,
}


def gpt2_expected(model_size: str, name: str) -> Expected:
    if name in GPT2_BPE:
        return GPT2_BPE[name]
    if name == "model.ckpt.data-00000-of-00001":
        return Expected(GPT2_DATA_BYTES[model_size])
    return Expected()


def gpt2_files(
    model_size: str,
    models_dir: str | os.PathLike,
    base_url: str = GPT2_BASE_URL,
    verify_known: bool | None = None,
) -> list[tuple[tuple[str, ...], Path, Expected]]:
    """``(urls, dest, expected)`` for the seven files. On OpenAI's server
    (``verify_known=None``) known sizes and hashes are checked and the BPE files have a
    second URL."""
    if model_size not in MODEL_SIZES:
        raise ValueError(
            f"unknown GPT-2 model size {model_size!r}; choose one of {list(MODEL_SIZES)}"
        )
    official = base_url == GPT2_BASE_URL
    if verify_known is None:
        verify_known = official
    model_dir = Path(models_dir) / model_size
    items: list[tuple[tuple[str, ...], Path, Expected]] = []
    for name in GPT2_FILES:
        urls: tuple[str, ...] = (f"{base_url}/{model_size}/{name}",)
        if official and name in GPT2_BPE:
            urls += (f"{GPT2_BPE_MIRROR}/{name}",)
        items.append(
            (
                urls,
                model_dir / name,
                gpt2_expected(model_size, name) if verify_known else Expected(),
            )
        )
    return items


def download_gpt2(
    model_size: str,
    models_dir: str | os.PathLike,
    *,
    base_url: str = GPT2_BASE_URL,
    verify_known: bool | None = None,
    **kwargs,
) -> Path:
    """Make sure ``models_dir/model_size`` holds OpenAI's seven files; return that folder."""
    fetch_all(gpt2_files(model_size, models_dir, base_url, verify_known), **kwargs)
    return Path(models_dir) / model_size


def download_and_load_gpt2(
    model_size: str, models_dir: str | os.PathLike, *, base_url: str = GPT2_BASE_URL, **kwargs
) -> tuple[dict, dict]:
    """Download (if needed) and read GPT-2 ``model_size`` -> ``(settings, params)``."""
    return load_gpt2(download_gpt2(model_size, models_dir, base_url=base_url, **kwargs))
