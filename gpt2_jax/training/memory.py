"""Peak host memory of a fine-tuning run, estimated before the weights are loaded.

peak ~ RUNTIME_BYTES + 2 x weights + prefix outputs, where
* weights are float32, held twice around loading (the NumPy arrays read from the
  checkpoint and the JAX tree made from them; the allocator does not always give the
  first copy back) and again while orbax writes the classifier;
* the frozen-prefix outputs are float32 [messages x length x n_embd], kept for the
  whole run (``--pool last-real`` touches fewer of their pages);
* RUNTIME_BYTES is what Python, JAX, XLA, TensorFlow and the data take themselves.
Calibrated on this project's measurements (README, "Memory"): at or above each of them,
by at most 0.9 GiB.
"""

from __future__ import annotations

import os

from gpt2_jax.data.budget import memory_available
from gpt2_jax.weights.openai import parameter_count

GIB = 1 << 30
RUNTIME_BYTES = int(1.6 * GIB)


def estimate_peak_bytes(
    settings: dict, n_messages: int, length: int, cache_prefix: bool = True
) -> int:
    weights = 4 * parameter_count(settings)
    prefix = 4 * n_messages * length * settings["n_embd"] if cache_prefix else 0
    return RUNTIME_BYTES + 2 * weights + prefix


def available_bytes() -> int | None:
    """What this process may still take: ``MemAvailable`` (Linux) lowered to what the
    container's cgroup limit leaves (``data.budget.memory_available``, the data budget's
    rule); else the free pages; None where unknown."""
    known = memory_available()
    if known is not None:
        return known
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_check(settings: dict, n_messages: int, length: int, cache_prefix: bool) -> str:
    """One line for the log; starts with ``WARNING`` when the estimate exceeds what the
    machine has free."""
    need = estimate_peak_bytes(settings, n_messages, length, cache_prefix)
    free = available_bytes()
    line = f"estimated peak memory {need / GIB:.1f} GiB"
    if free is None:
        return line
    line += f" ({free / GIB:.1f} GiB available)"
    if need > free:
        line = (
            "WARNING: " + line + ": the system may kill this run when memory runs out "
            "(then --resume RUN_DIR goes on from the last finished epoch). Fewer messages "
            "(--test-size), a shorter --max-length or --pool last-real need less."
        )
    return line


def peak_memory_bytes() -> int:
    """This process's peak resident memory so far (Linux: ru_maxrss is in KiB)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
