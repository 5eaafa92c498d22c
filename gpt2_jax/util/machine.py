"""The machine a timing was measured on, and what its CPU lacks."""

from __future__ import annotations

import os
import platform
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # x86's bfloat16 units
X86 = frozenset({"x86_64", "amd64", "i386", "i686"})


def _cpuinfo() -> tuple[str | None, set[str]]:
    """The CPU's model name and flags from /proc/cpuinfo (None and no flags where unknown)."""
    model, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return model, flags


def machine_name() -> str:
    """CPU model, core count and whether it has bfloat16 units (timings depend on all three)."""
    model, flags = _cpuinfo()
    bf16 = sorted(flags & BF16_FLAGS)
    return f"{model or os.uname().machine}, {os.cpu_count()} CPUs, " + (
        f"bfloat16 units ({', '.join(bf16)})" if bf16 else "no bfloat16 units"
    )


def run_machine(devices: Sequence[Any]) -> str:
    """The machine a run trained on, for its record and model card: ``machine_name()``
    and the devices by kind ("...; 1 x cpu", "...; 8 x NVIDIA H200")."""
    kinds = Counter(str(getattr(d, "device_kind", d)) for d in devices)
    return f"{machine_name()}; " + ", ".join(f"{n} x {kind}" for kind, n in kinds.items())


def cpu_identity() -> str:
    """What programs compiled for this CPU depend on: its architecture, model name and
    instruction-set flags (as /proc/cpuinfo gives them; the architecture alone where
    unknown)."""
    model, flags = _cpuinfo()
    return " ".join([platform.machine(), model or "", *sorted(flags)])


def cpu_lacks_bfloat16() -> bool:
    """True only on an x86 CPU whose flags (read from /proc/cpuinfo) name neither
    ``avx512_bf16`` nor ``amx_bf16``: there bfloat16 matmuls are emulated, slower than
    float32. Other CPUs, or flags that cannot be read: False (nothing known to say)."""
    if platform.machine().lower() not in X86:
        return False
    _, flags = _cpuinfo()
    return bool(flags) and not flags & BF16_FLAGS
