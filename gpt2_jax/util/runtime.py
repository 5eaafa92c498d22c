"""Process-wide settings that make XLA's CPU runtime faster, applied by the command-line
entry points (``cli.main``, ``experiments.bench``, ``experiments.classify``).

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

import ctypes
import ctypes.util

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
