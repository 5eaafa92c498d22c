"""Pretrained GPT-2 weights from any folder this package reads.

Two layouts hold the same numbers under other names:

* OpenAI's: ``hparams.json`` + the TensorFlow checkpoint ``model.ckpt.*`` (what the lab
  downloads; ``openai_checkpoint``, needs TensorFlow);
* Hugging Face's: ``config.json`` + ``model.safetensors`` (``hf_checkpoint``, needs
  only NumPy and safetensors).

``load_pretrained(folder)`` returns the lab's ``(settings, params)`` from either;
whoever loads weights goes through here and never asks which layout it was.
"""

from __future__ import annotations

import os
from pathlib import Path

from gpt2_jax.weights import hf as hf_checkpoint
from gpt2_jax.weights import openai as openai_checkpoint

OPENAI, HF = "openai", "hf"


def folder_format(folder: str | os.PathLike) -> str:
    """``"openai"`` (hparams.json) or ``"hf"`` (config.json); a folder that is neither,
    or both, is a ``FileNotFoundError`` saying what each layout holds."""
    folder = Path(folder)
    openai, hf = (folder / "hparams.json").is_file(), hf_checkpoint.is_hf_folder(folder)
    if openai and hf:
        raise FileNotFoundError(
            f"{folder} holds both OpenAI's hparams.json and Hugging Face's "
            "config.json; keep one model per folder"
        )
    if openai:
        return OPENAI
    if hf:
        return HF
    if not folder.is_dir():
        if folder.exists():
            raise NotADirectoryError(
                f"{folder} is a file; --model-dir takes a GPT-2 model folder (OpenAI's files, "
                "or a Hugging Face folder)"
            )
        raise FileNotFoundError(f"{folder}: no such folder (expected a GPT-2 model folder)")
    raise FileNotFoundError(
        f"{folder} holds no GPT-2 model: expected OpenAI's hparams.json + model.ckpt.* or "
        f"Hugging Face's config.json + {' / '.join(hf_checkpoint.WEIGHT_FILES)}"
    )


def read_folder_settings(folder: str | os.PathLike) -> dict:
    """The model's ``settings`` (``n_vocab, n_ctx, n_embd, n_head, n_layer``), read
    from its small config file only."""
    if folder_format(folder) == OPENAI:
        return openai_checkpoint.read_settings(folder)
    return hf_checkpoint.read_hf_settings(folder)


def load_pretrained(folder: str | os.PathLike) -> tuple[dict, dict]:
    """``(settings, params)`` of the folder's GPT-2, checked name by name and shape by
    shape, whichever layout it is in."""
    if folder_format(folder) == OPENAI:
        return openai_checkpoint.load_gpt2(folder)
    return hf_checkpoint.load_hf_gpt2(folder)
