"""The machine a timing was measured on."""

from __future__ import annotations

import os
from pathlib import Path


def machine_name() -> str:
    """CPU model, core count and whether it has bfloat16 units (timings depend on all three)."""
    model, flags = os.uname().machine, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    bf16 = sorted(flags & {"avx512_bf16", "amx_bf16"})
    return f"{model}, {os.cpu_count()} CPUs, " + (
        f"bfloat16 units ({', '.join(bf16)})" if bf16 else "no bfloat16 units"
    )
