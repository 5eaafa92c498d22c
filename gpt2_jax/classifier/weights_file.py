"""The classifier's weights as one flat file, ``classifier/weights.bin``, for a quick load.

The file is the byte stream that ``weights_sha256`` hashes: for each leaf, in name order,
the header ``name:dtype:shape;`` (UTF-8) and then the leaf's bytes (C order, native byte
order). So the file's own SHA-256 *is* the weights' SHA-256 recorded in classifier.json:
``read_weights`` hashes the bytes as it reads them and refuses the file unless the two
agree, before anything in it is parsed or used. No re-serialisation, no orbax (a 124M
classifier: about 0.6 s instead of 2 s for orbax's restore and the check).

``save_classifier`` writes it beside orbax's files (which older versions read); folders
saved before it existed load through orbax, as before. ``prefetch_run`` starts reading a
run folder's file in a thread while the caller imports JAX or traces the model; numpy is
all this module imports, so a command can call it first.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from gpt2_jax.util.files import atomic_write

META_FILE = "classifier.json"
PARAMS_DIR = "classifier"
WEIGHTS_FILE = "weights.bin"
CHUNK = 16 << 20  # bytes read (and hashed) at a time
MAX_HEADER = 1024  # a leaf's "name:dtype:shape;" is far shorter


def leaf_records(params) -> Iterator[tuple[bytes, np.ndarray]]:
    """``(header, bytes as uint8 [n])`` of every leaf, in name order, on the host."""
    from gpt2_jax.parallel.mesh import to_host  # JAX: for writing only
    from gpt2_jax.util.tree import named_leaves

    for name, leaf in sorted(named_leaves(params).items()):
        array = to_host(leaf)
        shape = array.shape  # a scalar's is (); ascontiguousarray would make it (1,)
        array = np.ascontiguousarray(array)
        header = f"{name}:{array.dtype}:{shape};".encode()
        yield header, array.reshape(-1).view(np.uint8)


def weights_sha256(params) -> str:
    """SHA-256 of every leaf's name, dtype, shape and bytes, in name order (on the host):
    the SHA-256 of the file ``write_weights`` writes."""
    h = hashlib.sha256()
    for header, data in leaf_records(params):
        h.update(header)
        h.update(data.data)
    return h.hexdigest()


def write_weights(path: str | os.PathLike, params) -> str:
    """Write ``params`` to ``path`` (whole or not at all); returns its SHA-256, which is
    ``weights_sha256(params)``."""
    h = hashlib.sha256()

    def write(part: Path) -> None:
        with open(part, "wb") as f:
            for header, data in leaf_records(params):
                for piece in (header, data.data):
                    f.write(piece)
                    h.update(piece)

    atomic_write(path, write)
    return h.hexdigest()


def read_weights(path: str | os.PathLike, sha256: str) -> dict:
    """The nested parameter dict in ``path`` (numpy arrays), if the file's SHA-256 is
    ``sha256``; otherwise a ``ValueError`` (damaged). The bytes are hashed as read, into
    memory of our own (not a memory map), and only those bytes are used: those a
    ``prefetch`` read if they hash to ``sha256``, else those read now."""
    pending = _take(path)
    if pending is not None:
        try:
            buffer, digest = pending.result()
            if digest == sha256:
                return _parse(buffer, str(path))
        except (OSError, ValueError):
            pass  # read again below, where the error is the reader's own
    buffer, digest = _read_hashed(path)
    if digest != sha256:
        raise ValueError(f"{path}: its SHA-256 is not the one recorded")
    return _parse(buffer, str(path))


_PENDING: dict[str, Future] = {}  # prefetches not yet taken, by real path
_LOCK = threading.Lock()


def prefetch(path: str | os.PathLike) -> Future:
    """Start reading and hashing ``path`` in a background thread (file reads and SHA-256
    release the GIL); the next ``read_weights(path, ...)`` takes the result. Returns the
    future of ``(bytes, SHA-256)``."""
    key = os.path.realpath(path)
    future: Future = Future()
    with _LOCK:
        if key in _PENDING:
            return _PENDING[key]
        _PENDING[key] = future

    def work() -> None:
        try:
            future.set_result(_read_hashed(key))
        except BaseException as err:  # handed to whoever takes it
            future.set_exception(err)

    threading.Thread(target=work, name="gpt2_jax-weights", daemon=True).start()
    return future


def prefetch_run(run_dir: str | os.PathLike) -> None:
    """``prefetch`` the weights.bin of the classifier in ``run_dir``, if its
    classifier.json names one; anything amiss is left for the load to report."""
    try:
        meta = json.loads((Path(run_dir) / META_FILE).read_text())
        if isinstance(meta, dict) and meta.get("weights_file") == WEIGHTS_FILE:
            prefetch(Path(run_dir) / PARAMS_DIR / WEIGHTS_FILE)
    except (OSError, ValueError):
        pass


def forget(path: str | os.PathLike) -> None:
    """Drop a prefetch of ``path`` that will not be taken (its memory with it)."""
    _take(path)


def _take(path: str | os.PathLike) -> Future | None:
    with _LOCK:
        return _PENDING.pop(os.path.realpath(path), None)


def _read_hashed(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """``(the file's bytes, their SHA-256)``; a file that changes size while read is a
    ``ValueError``."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        buffer = np.empty(size, np.uint8)
        view = buffer.data
        h, done = hashlib.sha256(), 0
        while done < size and (n := f.readinto(view[done : done + CHUNK])):
            h.update(view[done : done + n])
            done += n
        if done != size or f.read(1):
            raise ValueError(f"{path}: the file changed size while it was read")
    return buffer, h.hexdigest()


def _parse(buffer: np.ndarray, where: str) -> dict:
    """The leaves in a verified stream of ``header, bytes`` records, nested by name:
    read-only views of ``buffer``, as immutable as the arrays orbax restored."""
    buffer.setflags(write=False)
    params: dict = {}
    raw, at = buffer.data, 0
    while at < len(buffer):
        end = bytes(raw[at : at + MAX_HEADER]).find(b";")
        if end < 0:
            raise ValueError(f"{where}: no leaf header at byte {at}")
        name, dtype, shape = _header(bytes(raw[at : at + end]).decode(), where)
        at += end + 1
        count = math.prod(shape)
        if at + count * dtype.itemsize > len(buffer):
            raise ValueError(f"{where}: {name} runs past the end of the file")
        leaf = np.frombuffer(raw, dtype, count, at).reshape(shape)
        at += count * dtype.itemsize
        *parents, last = name.split("/")
        node = params
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = leaf
    return params


def _header(text: str, where: str) -> tuple[str, np.dtype, tuple[int, ...]]:
    """``name:dtype:(d0, d1, ...)`` -> ``(name, dtype, shape)``."""
    try:
        name, dtype, shape = text.rsplit(":", 2)
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        return name, _dtype(dtype), dims
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"{where}: a leaf header that cannot be read: {text[:80]!r}") from None


def _dtype(name: str) -> np.dtype:
    """numpy's dtype of that name, or ml_dtypes' (``bfloat16``, as jax writes it)."""
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
