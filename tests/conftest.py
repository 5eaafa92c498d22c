"""Shared fixtures: a tiny GPT-2 folder in OpenAI's exact layout, and the offline data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpt2_jax.weights.synthetic import write_openai_model_dir

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GPT2_JAX_SHARED_DATA", REPO.parent / "shared" / "data"))
BPE_DIR = SHARED_DATA / "gpt2_bpe"
SMS_FILE = SHARED_DATA / "sms_spam_collection" / "SMSSpamCollection"

# Real vocabulary (so the real tokenizer's ids fit), everything else tiny.
TINY_SETTINGS = {"n_vocab": 50257, "n_ctx": 64, "n_embd": 32, "n_head": 4, "n_layer": 2}


def needs(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A GPT-2 folder with random weights: hparams.json + model.ckpt.* (+ BPE files if present)."""
    model_dir = tmp_path_factory.mktemp("models") / "tiny"
    bpe = BPE_DIR if BPE_DIR.is_dir() else None
    return write_openai_model_dir(model_dir, TINY_SETTINGS, seed=1, bpe_dir=bpe)
