"""Process-wide settings applied by the command-line entry points (``cli.main``,
``experiments.bench``, ``experiments.classify``, ``experiments.export``): memory that makes
XLA's CPU runtime faster, and TensorFlow's and XLA's start-up messages kept off stderr
unless ``--debug`` (:func:`quiet_native_logs`).

XLA allocates the buffers of every jitted call afresh. glibc's malloc serves large
blocks with ``mmap`` and returns them on ``free``, so each call page-faults its tens of
megabytes of activations in again: measured on a 2-core Xeon, ``x + 1`` over [16, 257,
3072] float32 took 12.6 ms with the defaults and 5.4 ms with freed memory kept; one
GPT-2 block at 16 x 257 went from 333 to 274 ms (float32) and 179 to 143 ms (bfloat16
matmuls), and the trainable tail's step from 44 to 35 ms. Keeping freed memory means
the resident size stays near the peak instead of shrinking between calls; the peak
itself is unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import sys
import tempfile

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
_done = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve blocks up to 1 GiB from its heap and to keep freed
    memory (no trimming below 2 GiB). Returns whether it applied (False on a C library
    without ``mallopt``, e.g. musl or macOS: nothing changes there). Idempotent."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    )
    return _done


LOG_LEVEL_VAR = "TF_CPP_MIN_LOG_LEVEL"  # read by TensorFlow's and XLA's C++ logging
QUIET_LEVEL = "2"  # errors only: no "oneDNN custom operations are on", no "Allocation ... exceeds"
_ABSL_HEADER = "WARNING: All log messages before absl::InitializeLog() is called"
# The user's own setting, read before ``import jax`` sets its default of 1 (gpt2_jax's
# __init__ imports this module first); None where unset.
USER_LOG_LEVEL = os.environ.get(LOG_LEVEL_VAR)


def quiet_native_logs(debug: bool) -> None:
    """TensorFlow's and XLA's C++ logging: errors only (``TF_CPP_MIN_LOG_LEVEL=2``), or
    with ``debug`` everything (0); a level the user set is kept. Call it before
    TensorFlow is imported. ``TF_ENABLE_ONEDNN_OPTS`` is left alone: it changes numbers,
    not messages."""
    os.environ[LOG_LEVEL_VAR] = USER_LOG_LEVEL or ("0" if debug else QUIET_LEVEL)


def _min_level() -> int:
    value = os.environ.get(LOG_LEVEL_VAR, "0").strip()
    return int(value) if value.isdigit() else 0


def native_noise(line: str, level: int) -> bool:
    """Whether ``line``, written by native code, is below ``level`` (0 info, 1 warning,
    2 error, as ``TF_CPP_MIN_LOG_LEVEL``): an absl line ``I0000 12:00:00.1 ...`` /
    ``W...`` of a lower severity, or absl's header before such lines."""
    if level >= 1 and line.startswith(_ABSL_HEADER):
        return True
    match = re.match(r"([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]", line)
    return match is not None and "IWEF".index(match.group(1)) < level


@contextlib.contextmanager
def native_stderr_filtered():
    """Drop the lines below ``TF_CPP_MIN_LOG_LEVEL`` that native code writes to file
    descriptor 2 in this block, passing the others on. For imports: TensorFlow logs
    "oneDNN custom operations are on" while loading, before its logging reads the
    variable. Nothing is captured where the level is 0 (unset)."""
    level = _min_level()
    if level < 1:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines = caught.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(x for x in lines if not native_noise(x, level)))
            sys.stderr.flush()
