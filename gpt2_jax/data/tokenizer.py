"""GPT-2's byte-pair encoding through tiktoken.

Built from a model directory's ``encoder.json`` + ``vocab.bpe`` when they are there
(no network needed), else from ``tiktoken.get_encoding("gpt2")``, which downloads the
two files once into its cache. Offline (``offline=True``, or ``GPT2_JAX_OFFLINE=1``)
only that cache is read: no host name is looked up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from gpt2_jax.util.fetch import Expected, offline_requested
from gpt2_jax.util.files import file_sha256, write_bytes_atomic

# a second home of the two BPE files (the one tiktoken reads)
GPT2_BPE_MIRROR = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main"
# GPT-2's byte-pair files are the same for every model size (and on the
# .../encodings/main/ path): sizes and SHA-256 of OpenAI's copies.
GPT2_BPE = {
    "encoder.json": Expected(
        1_042_301, "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
    ),
    "vocab.bpe": Expected(
        456_318, "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
    ),
}

logger = logging.getLogger(__name__)

END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256
# GPT-2's pre-tokenisation regex (contractions, letters, digits, other, spaces).
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
BPE_FILES = ("encoder.json", "vocab.bpe")
HF_BPE_FILES = ("vocab.json", "merges.txt")  # the same two files, as Hugging Face names them
HF_TOKENIZER_JSON = "tokenizer.json"  # both in one file (transformers 5 saves only this)
# where tiktoken.get_encoding("gpt2") downloads them from (its cache key is the URL's SHA-1)
TIKTOKEN_GPT2_URL = GPT2_BPE_MIRROR


def get_tokenizer(
    bpe_dir: str | os.PathLike | None = None, *, offline: bool | None = None
) -> tiktoken.Encoding:
    """GPT-2 tokenizer; ``bpe_dir`` is a folder with ``encoder.json`` and ``vocab.bpe``.

    Without those files: online, ``tiktoken.get_encoding("gpt2")`` (its cache, else a
    download); offline (``offline=True``, or ``None`` and ``GPT2_JAX_OFFLINE`` set, see
    ``gpt2_jax.util.fetch.offline_requested``) only tiktoken's cache, and no network at
    all. What cannot be had is a ``RuntimeError`` of one line saying where to put them."""
    local = bpe_files(bpe_dir) if bpe_dir is not None else None
    if local is not None:
        assert bpe_dir is not None  # local is only found in a given bpe_dir
        try:
            encoding = encoding_from_files(*local)
        except RuntimeError:
            if local[0].parent == Path(bpe_dir):
                raise
            raise RuntimeError(
                f"{Path(bpe_dir) / HF_TOKENIZER_JSON}: not GPT-2's byte-pair "
                "vocabulary and merges; gpt2_jax reads GPT-2's tokenizer only"
            ) from None
        if local[0].parent != Path(bpe_dir):
            used = f"{Path(bpe_dir) / HF_TOKENIZER_JSON}'s vocabulary and merges"
            _say(used, "no encoder.json + vocab.bpe nor vocab.json + merges.txt there")
        elif local[0].name != BPE_FILES[0]:
            _say(
                f"{local[0].name} + {local[1].name} from {bpe_dir}",
                "no encoder.json + vocab.bpe there",
            )
        return encoding
    if offline is None:
        offline = offline_requested()
    cached = tiktoken_cached_files()
    none_here = f"none in {bpe_dir}" if bpe_dir is not None else "no model folder given"
    if cached is not None:
        _say(f"encoder.json + vocab.bpe from tiktoken's cache ({cached[0].parent})", none_here)
    if offline:
        if cached is not None:
            return encoding_from_files(*cached)
        cache = tiktoken_cache_dir() or "disabled"
        raise RuntimeError(
            _missing_message(
                bpe_dir, f"nor in tiktoken's cache ({cache}), and offline mode downloads nothing"
            )
        )
    try:
        encoding = tiktoken.get_encoding("gpt2")
    except Exception as err:  # network errors surface as several types
        reason = " ".join(str(err).split()) or type(err).__name__
        raise RuntimeError(
            _missing_message(bpe_dir, f"and tiktoken could not download them ({reason})")
        ) from err
    if cached is None:
        where = tiktoken_cache_dir() or "no cache: caching is off"
        _say(f"encoder.json + vocab.bpe downloaded by tiktoken ({where})", none_here)
    return encoding


def _say(used: str, why: str) -> None:
    """One line in the run's log when the tokenizer is not the model folder's own
    encoder.json + vocab.bpe: which files it is, from where, and why."""
    logger.info(f"tokenizer: {used} ({why})")


def bpe_files(folder: str | os.PathLike) -> tuple[Path, Path] | None:
    """GPT-2's two BPE files in ``folder``: OpenAI's ``encoder.json`` + ``vocab.bpe``,
    else Hugging Face's ``vocab.json`` + ``merges.txt`` (the same contents), else the
    pair written out of Hugging Face's ``tokenizer.json`` (what transformers 5 saves);
    None if the folder has none of them."""
    for names in (BPE_FILES, HF_BPE_FILES):
        paths = (Path(folder) / names[0], Path(folder) / names[1])
        if all(path.is_file() for path in paths):
            return paths
    if (Path(folder) / HF_TOKENIZER_JSON).is_file():
        return _pair_from_tokenizer_json(Path(folder) / HF_TOKENIZER_JSON)
    return None


def _pair_from_tokenizer_json(path: Path) -> tuple[Path, Path]:
    """``encoder.json`` + ``vocab.bpe`` with the vocabulary and merges of a byte-level
    BPE ``tokenizer.json``, in a temp folder named by the file's SHA-256 (written once)."""
    raw = path.read_bytes()
    try:
        model = json.loads(raw)["model"]
        vocab, merges = model["vocab"], model["merges"]
        if model.get("type") != "BPE" or not isinstance(vocab, dict) or not vocab:
            raise ValueError(f"model type {model.get('type')!r} with {len(vocab)} tokens")
        lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise RuntimeError(
            f"{path}: not a byte-level BPE tokenizer with a vocabulary and "
            f"merges ({type(err).__name__}: {err})"
        ) from None
    folder = Path(tempfile.gettempdir()) / "gpt2_jax-bpe" / hashlib.sha256(raw).hexdigest()
    pair = (folder / BPE_FILES[0], folder / BPE_FILES[1])
    texts = (json.dumps(vocab), "#version: 0.2\n" + "\n".join(lines) + "\n")
    for target, text in zip(pair, texts):  # written once; an earlier copy is checked
        data = text.encode("utf-8")
        if target.is_file() and target.read_bytes() == data:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, data)
    return pair


def encoding_from_files(
    encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike
) -> tiktoken.Encoding:
    """GPT-2's encoding from its two local files (tiktoken checks they agree); files
    that are not GPT-2's are a ``RuntimeError`` naming them."""
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(encoder_json)
        )
    except (AssertionError, ValueError, KeyError) as err:  # tiktoken asserts they agree
        reason = " ".join(str(err).split()) or "they do not agree"
        raise RuntimeError(
            f"{encoder_json} + {vocab_bpe}: not GPT-2's byte-pair files "
            f"({type(err).__name__}: {reason}); replace both with copies from "
            f"{TIKTOKEN_GPT2_URL}/"
        ) from None
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={END_OF_TEXT: END_OF_TEXT_ID},
        explicit_n_vocab=END_OF_TEXT_ID + 1,
    )


def tiktoken_cache_dir() -> str:
    """The folder ``tiktoken.load.read_file_cached`` uses: ``$TIKTOKEN_CACHE_DIR``, else
    ``$DATA_GYM_CACHE_DIR``, else ``<tmp>/data-gym-cache``; "" means caching is off."""
    for name in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if name in os.environ:
            return os.environ[name]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def tiktoken_cached_files() -> tuple[Path, Path] | None:
    """``(encoder.json, vocab.bpe)`` as tiktoken cached them (file name: the SHA-1 of
    the URL), if both are there with OpenAI's SHA-256; else None. Reads no network."""
    folder = tiktoken_cache_dir()
    if not folder:
        return None
    paths = []
    for name in BPE_FILES:
        key = hashlib.sha1(f"{TIKTOKEN_GPT2_URL}/{name}".encode()).hexdigest()
        path = Path(folder) / key
        if not path.is_file() or file_sha256(path) != GPT2_BPE[name].sha256:
            return None
        paths.append(path)
    return paths[0], paths[1]


def _missing_message(bpe_dir, why: str) -> str:
    """One line: where encoder.json and vocab.bpe were expected, why they could not be
    had, and where to get them."""
    where = f"in {bpe_dir}" if bpe_dir is not None else "(no model folder given)"
    put = f"put both in {bpe_dir}" if bpe_dir is not None else "put both in the model folder"
    return (
        f"GPT-2 tokenizer unavailable: no encoder.json + vocab.bpe {where} (nor "
        f"vocab.json + merges.txt or tokenizer.json), {why}; "
        f"get them from {TIKTOKEN_GPT2_URL}/encoder.json and {TIKTOKEN_GPT2_URL}/vocab.bpe "
        f"and {put}"
    )
