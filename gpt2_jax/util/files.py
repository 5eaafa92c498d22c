"""Files written whole or not at all, and file hashes: one rule for every writer.

``atomic_write`` writes to a temporary file beside the target (a unique name, so two
writers never share one), flushes it to the disk (``fsync``), then renames it over the
target: a reader, or a run after a crash or power cut, sees the old file or the new one,
never a part. Used for ``metrics.json``, ``config.json``, ``classifier.json``, predictions,
the SMS file and tokenizer files. (Downloads keep their resumable ``.part`` files and the
prefix cache its reservation protocol; both end with the same rename.)
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

CHUNK_BYTES = 1 << 20


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """``write(temporary_path)`` fills a file that then replaces ``path`` in one rename."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".part")
    os.close(fd)
    part = Path(name)
    try:
        write(part)
        with open(part, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(part, 0o666 & ~_UMASK)  # as an ordinary new file (mkstemp makes it 0600)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda part: part.write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda part: part.write_bytes(data))


def file_sha256(path: str | os.PathLike, chunk: int = CHUNK_BYTES) -> str:
    """SHA-256 of the whole file, read in chunks through one reused buffer: plain reads,
    not a memory map, so a file that shrinks meanwhile cannot crash the process (SIGBUS)."""
    h = hashlib.sha256()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            h.update(view[:n])
    return h.hexdigest()


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# read once, at import: os.umask can only be read by setting it, and setting it while
# another thread creates a file would give that file the wrong mode
_UMASK = _read_umask()
