"""Fetch files over HTTP(S) into a cache, and GPT-2's seven files in particular.

A file is written to ``<name>.part`` and renamed only when the byte count matches
what the server announced, so a file under its final name is whole. Offline,
files already present are used as they are; missing ones are reported together,
each with its URL and the path to put it at.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .checkpoint import load_gpt2
from .config import MODEL_SIZES

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
TIMEOUT_S = 30.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class MissingFile:
    url: str
    dest: Path
    reason: str


class DownloadError(RuntimeError):
    """Files that could not be fetched; the message says where to put each by hand."""

    def __init__(self, missing: list[MissingFile]):
        self.missing = missing
        lines = [f"{len(missing)} file(s) could not be downloaded:"]
        for m in missing:
            lines.append(f"  {m.dest.name}: {m.reason}\n    get it from {m.url}\n    and put it at {m.dest}")
        lines.append("Download them on a machine with internet access and copy them there, "
                     "or point the program at a directory that already has them.")
        super().__init__("\n".join(lines))


def offline_requested() -> bool:
    return os.environ.get("GPT2_JAX_OFFLINE", "") not in ("", "0")


def _remote_size(url: str, timeout: float) -> int | None:
    """Content-Length from a HEAD request (None when the server does not say)."""
    request = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def fetch(url: str, dest: str | os.PathLike, *, timeout: float = TIMEOUT_S,
          offline: bool | None = None, progress: bool = True) -> Path:
    """Make ``dest`` a whole copy of ``url``; return its path.

    Skips the download when ``dest`` exists with the size the server announces.
    When the server cannot be reached, an existing ``dest`` is kept and a missing one
    raises ``DownloadError``.
    """
    dest = Path(dest)
    offline = offline_requested() if offline is None else offline
    if offline:
        if dest.is_file():
            return dest
        raise DownloadError([MissingFile(url, dest, "offline mode (GPT2_JAX_OFFLINE) and not on disk")])
    try:
        expected = _remote_size(url, timeout)
        if dest.is_file() and (expected is None or dest.stat().st_size == expected):
            return dest
        _download(url, dest, expected, timeout, progress)
    except (urllib.error.URLError, OSError, ValueError) as err:
        if dest.is_file() and not isinstance(err, urllib.error.HTTPError):
            return dest  # unreachable server: trust the complete file we have
        raise DownloadError([MissingFile(url, dest, _describe(err))]) from err
    return dest


def _describe(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"server answered HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"cannot reach the server ({err.reason})"
    return str(err)


def _download(url: str, dest: Path, expected: int | None, timeout: float, progress: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None else expected
        with open(part, "wb") as out, tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024,
            desc=dest.name, disable=None if progress else True, leave=False,
        ) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if total is not None and got != total:
        part.unlink()
        raise ValueError(f"{url}: received {got} bytes, the server announced {total}")
    os.replace(part, dest)


def fetch_all(items: list[tuple[str, Path]], **kwargs) -> list[Path]:
    """``fetch`` each ``(url, dest)``; report every failure together."""
    missing: list[MissingFile] = []
    paths = []
    for url, dest in items:
        try:
            paths.append(fetch(url, dest, **kwargs))
        except DownloadError as err:
            missing.extend(err.missing)
    if missing:
        raise DownloadError(missing)
    return paths


def gpt2_files(model_size: str, models_dir: str | os.PathLike,
               base_url: str = GPT2_BASE_URL) -> list[tuple[str, Path]]:
    if model_size not in MODEL_SIZES:
        raise ValueError(f"unknown GPT-2 model size {model_size!r}; choose one of {list(MODEL_SIZES)}")
    model_dir = Path(models_dir) / model_size
    return [(f"{base_url}/{model_size}/{name}", model_dir / name) for name in GPT2_FILES]


def download_gpt2(model_size: str, models_dir: str | os.PathLike, *,
                  base_url: str = GPT2_BASE_URL, **kwargs) -> Path:
    """Make sure ``models_dir/model_size`` holds OpenAI's seven files; return that folder."""
    fetch_all(gpt2_files(model_size, models_dir, base_url), **kwargs)
    return Path(models_dir) / model_size


def download_and_load_gpt2(model_size: str, models_dir: str | os.PathLike, *,
                           base_url: str = GPT2_BASE_URL, **kwargs) -> tuple[dict, dict]:
    """Download (if needed) and read GPT-2 ``model_size`` -> ``(settings, params)``."""
    return load_gpt2(download_gpt2(model_size, models_dir, base_url=base_url, **kwargs))

