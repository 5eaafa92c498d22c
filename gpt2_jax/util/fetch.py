"""Fetch files over HTTP(S) into a cache, verified.

A download goes to ``<name>.part`` and is renamed to ``<name>`` only after it is
complete and verified: byte count equal to what the server announced and, where
known, to the expected size and SHA-256 (``Expected``). So a file under its final
name is whole, and a later run can trust it.

Failures that may pass (a timeout, a connection cut, HTTP 5xx/408/429, a short
body) are retried with exponential backoff, resuming the ``.part`` file with an
HTTP Range request when the server honours it; failures that will not pass (HTTP
404, a file of the wrong size or hash, an unreachable host) move on to the next
URL at once. Whatever cannot be had is reported together, each file with its URLs
and the path to put it at.
"""

from __future__ import annotations

import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from gpt2_jax.util.files import file_sha256

TIMEOUT_S = 30.0
RETRIES = 4
BACKOFF_S = 1.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Expected:
    """What a whole file is known to be; ``None`` = not known (trust the server)."""

    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class MissingFile:
    url: str
    dest: Path
    reason: str


def missing_lines(missing: Sequence[MissingFile]) -> list[str]:
    """One paragraph per file (in order): why it is missing, its URLs, where it goes."""
    by_dest: dict[Path, list[MissingFile]] = {}
    for m in missing:
        by_dest.setdefault(m.dest, []).append(m)
    lines = []
    for dest, tries in by_dest.items():
        if len({m.reason for m in tries}) == 1:
            lines.append(f"  {dest.name}: {tries[0].reason}")
            lines += [
                f"    {'get it from' if k == 0 else '         or'} {m.url}"
                for k, m in enumerate(tries)
            ]
        else:
            lines.append(f"  {dest.name}:")
            lines += [f"    {m.url}: {m.reason}" for m in tries]
        lines.append(f"    and put it at {dest}")
    return lines


def missing_count(missing: Sequence[MissingFile]) -> int:
    """How many files ``missing`` names (each file may have several URLs)."""
    return len({m.dest for m in missing})


class DownloadError(RuntimeError):
    """Files that could not be fetched; the message says where to put each by hand."""

    def __init__(self, missing: list[MissingFile]):
        self.missing = missing
        lines = [f"{missing_count(missing)} file(s) could not be downloaded:"]
        lines += missing_lines(missing)
        lines.append(
            "Download them on a machine with internet access and copy them there, "
            "or point the program at a directory that already has them."
        )
        super().__init__("\n".join(lines))


class _Transient(Exception):
    """A failure worth retrying (the .part file is kept for a Range request)."""


class _Permanent(Exception):
    """A failure retrying the same URL will not fix."""


def offline_requested() -> bool:
    return os.environ.get("GPT2_JAX_OFFLINE", "") not in ("", "0")


sha256_of = file_sha256  # the name downloads (and their tests) use


def verify(path: Path, expected: Expected) -> str | None:
    """``None`` if ``path`` is what ``expected`` says, else what is wrong."""
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        return f"{size:,} bytes, expected {expected.size:,}"
    if expected.sha256 is not None:
        got = sha256_of(path)
        if got != expected.sha256:
            return f"SHA-256 {got}, expected {expected.sha256}"
    return None


def _remote_size(url: str, timeout: float) -> int | None:
    """Content-Length from a HEAD request (None when the server does not say)."""
    request = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def _have_whole(url: str, dest: Path, expected: Expected, timeout: float) -> bool:
    """Is the file already at ``dest`` complete? Known size/hash: checked locally.
    Otherwise its size is compared with the server's, and an unreachable server
    leaves it trusted (it got its final name only after a whole download)."""
    if expected != Expected():
        return verify(dest, expected) is None
    try:
        remote = _remote_size(url, timeout)
    except (urllib.error.URLError, OSError):
        return True
    return remote is None or dest.stat().st_size == remote


def fetch(
    urls: str | Sequence[str],
    dest: str | os.PathLike,
    *,
    expected: Expected = Expected(),
    timeout: float = TIMEOUT_S,
    retries: int = RETRIES,
    backoff: float = BACKOFF_S,
    offline: bool | None = None,
    progress: bool = True,
) -> Path:
    """Make ``dest`` a whole, verified copy of the file at ``urls`` (tried in order);
    return its path. Raises ``DownloadError`` naming every URL tried and why."""
    urls = (urls,) if isinstance(urls, str) else tuple(urls)
    dest = Path(dest)
    offline = offline_requested() if offline is None else offline
    if dest.is_file():
        if offline:
            problem = verify(dest, expected)
            if problem is None:
                return dest
            raise DownloadError(
                [
                    MissingFile(
                        urls[0],
                        dest,
                        f"on disk but damaged ({problem}); offline mode, so not downloaded again",
                    )
                ]
            )
        if _have_whole(urls[0], dest, expected, timeout):
            return dest
    if offline:
        raise DownloadError(
            [MissingFile(u, dest, "offline mode (GPT2_JAX_OFFLINE) and not on disk") for u in urls]
        )
    failures = []
    for url in urls:
        try:
            _fetch_with_retries(url, dest, expected, timeout, retries, backoff, progress)
            return dest
        except _Permanent as err:
            failures.append(MissingFile(url, dest, str(err)))
    raise DownloadError(failures)


def _fetch_with_retries(url, dest, expected, timeout, retries, backoff, progress) -> None:
    for attempt in range(retries + 1):
        try:
            return _download(url, dest, expected, timeout, progress)
        except _Transient as err:
            if attempt == retries:
                raise _Permanent(f"{err} (gave up after {retries + 1} attempts)") from None
            time.sleep(backoff * 2**attempt)


def _classify(err: BaseException) -> Exception:
    """Map an error from urllib/http.client/socket to ``_Transient`` or ``_Permanent``."""
    if isinstance(err, urllib.error.HTTPError):
        text = f"server answered HTTP {err.code} {err.reason}"
        return _Transient(text) if err.code >= 500 or err.code in (408, 429) else _Permanent(text)
    if isinstance(err, urllib.error.URLError):
        reason = err.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return _Transient(f"no answer within the timeout ({reason})")
        return _Permanent(f"cannot reach the server ({reason})")
    if isinstance(err, (socket.timeout, TimeoutError)):
        return _Transient(f"no data within the timeout ({err})")
    if isinstance(err, (ConnectionError, http.client.HTTPException)):
        return _Transient(f"connection broken ({type(err).__name__}: {err})")
    return _Permanent(str(err))


def _download(url: str, dest: Path, expected: Expected, timeout: float, progress: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if expected.size is not None and have > expected.size:
        part.unlink()
        have = 0
    request = urllib.request.Request(url)
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # our partial file does not fit this server's file
            part.unlink()
            raise _Transient("partial file does not match the server's; starting over") from None
        raise _classify(err) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _classify(err) from None
    with response:
        if have and response.status != 206:  # Range ignored: the body is the whole file
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else expected.size
        if expected.size is not None and total is not None and total != expected.size:
            part.unlink(missing_ok=True)
            raise _Permanent(
                f"the server's file has {total:,} bytes; the known file has {expected.size:,}"
            )
        try:
            with (
                open(part, "ab" if have else "wb") as out,
                tqdm(
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    disable=None if progress else True,
                    leave=False,
                ) as bar,
            ):
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as err:
            raise _classify(err) from None
    got = part.stat().st_size
    if total is not None and got < total:
        raise _Transient(f"connection closed after {got:,} of {total:,} bytes")
    if total is not None and got > total:
        part.unlink()
        raise _Transient(f"received {got:,} bytes, more than the {total:,} announced")
    problem = verify(part, expected)
    if problem is not None:
        part.unlink()
        raise _Permanent(f"downloaded file is damaged: {problem}")
    os.replace(part, dest)


def fetch_all(
    items: Sequence[tuple[str | tuple[str, ...], Path, Expected]], **kwargs
) -> list[Path]:
    """``fetch`` each ``(url or urls, dest, expected)``; report every failure together."""
    missing: list[MissingFile] = []
    paths = []
    for urls, dest, expected in items:
        try:
            paths.append(fetch(urls, dest, expected=expected, **kwargs))
        except DownloadError as err:
            missing.extend(err.missing)
    if missing:
        raise DownloadError(missing)
    return paths
