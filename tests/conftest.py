"""Shared fixtures: a tiny GPT-2 folder in OpenAI's exact layout, GPT-2-style BPE files
(the real ones when present, else a vocabulary the tests write), and the offline data."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from tiny_bpe import write_tiny_bpe

from gpt2_jax.weights.synthetic import write_openai_model_dir

REPO = Path(__file__).resolve().parents[1]
# The commands keep compiled programs in the user's cache folder; the tests (in this
# process and in the commands they start) write none there unless a test asks for it
# (tests/util/test_compile_cache.py) or GPT2_JAX_COMPILE_CACHE names a folder.
os.environ.setdefault("GPT2_JAX_COMPILE_CACHE", "off")
SHARED_DATA = Path(os.environ.get("GPT2_JAX_SHARED_DATA", REPO.parent / "shared" / "data"))
BPE_DIR = SHARED_DATA / "gpt2_bpe"
SMS_FILE = SHARED_DATA / "sms_spam_collection" / "SMSSpamCollection"
REAL_BPE = all((BPE_DIR / name).is_file() for name in ("encoder.json", "vocab.bpe"))

# GPT-2's vocabulary size (the real tokenizer's ids fit), everything else tiny.
TINY_SETTINGS = {"n_vocab": 50257, "n_ctx": 64, "n_embd": 32, "n_head": 4, "n_layer": 2}

HOW_TO_ENABLE = (
    "set GPT2_JAX_SHARED_DATA to a folder holding gpt2_bpe/ (encoder.json, "
    "vocab.bpe) and sms_spam_collection/SMSSpamCollection, as .ci/run does"
)


def needs(path: Path):
    """Skip unless ``path`` (one of the real data files or folders) is there."""
    return pytest.mark.skipif(
        not path.exists(), reason=f"needs the real {path.name} at {path}: {HOW_TO_ENABLE}"
    )


# Only for tests that need GPT-2's *real* vocabulary (its exact ids and token counts);
# the others take the ``bpe_dir`` fixture.
needs_real_bpe = pytest.mark.skipif(
    not REAL_BPE,
    reason=f"needs GPT-2's real encoder.json + vocab.bpe in {BPE_DIR}: {HOW_TO_ENABLE}",
)

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "", None}


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """No test reaches for the network: host names other than this machine's do not
    resolve (as on a machine without one), so a download the test did not mean fails
    at once instead of waiting for a timeout. Stand-in servers on 127.0.0.1 still work."""
    resolve = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in _LOCAL_HOSTS:
            raise socket.gaierror(socket.EAI_NONAME, f"tests use no network (host {name!r})")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)


@pytest.fixture(scope="session")
def tiny_bpe_dir(tmp_path_factory) -> Path:
    """``encoder.json`` + ``vocab.bpe`` of a GPT-2-sized byte-level vocabulary written by
    the tests (tests/tiny_bpe.py): GPT-2's format and ids, not GPT-2's merges."""
    return write_tiny_bpe(tmp_path_factory.mktemp("tiny_bpe"))


@pytest.fixture(scope="session")
def bpe_dir(request) -> Path:
    """GPT-2's real BPE folder when present (as in CI), else the tests' own vocabulary."""
    return BPE_DIR if REAL_BPE else request.getfixturevalue("tiny_bpe_dir")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bpe_dir) -> Path:
    """A GPT-2 folder with random weights: hparams.json + model.ckpt.* + the BPE files."""
    model_dir = tmp_path_factory.mktemp("models") / "tiny"
    return write_openai_model_dir(model_dir, TINY_SETTINGS, seed=1, bpe_dir=bpe_dir)
