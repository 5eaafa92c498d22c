"""How much memory reading one data file may take, and the check that holds it there.

The budget is, in this order: the ``memory_budget`` a caller gives (bytes), the
environment variable ``GPT2_JAX_DATA_BUDGET_GIB``, or half the memory available now (the
container's cgroup limit counted where there is one). CSV, TSV and JSON Lines files are
read a block at a time and only the kept cells stay, so reading stops with a one-line
error as soon as the rows kept pass the budget; the SMS format and Parquet are read
whole, so their file size is checked against the budget before reading (texts to
classify from Parquet are read a row group at a time: its size is checked instead).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BUDGET_ENV = "GPT2_JAX_DATA_BUDGET_GIB"
GIB = 1 << 30
# what one kept row costs beside its strings: its tuple and list slot, the place and
# "where" strings, the frame's three object slots (measured with tracemalloc, the frame built: ~280 B)
ROW_BYTES = 288
# memory per byte of file when a file is read whole (measured: the SMS collection
# 3.4x with pandas; parquet expands as its compression allows)
WHOLE_FILE_FACTOR = {"sms": 6, "parquet": 12}


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) -> None


def memory_available() -> int | None:
    """Bytes this process may still take: ``MemAvailable`` (Linux), lowered to what the
    cgroup (v2 or v1) leaves under its limit; None where unknown."""
    known = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    known.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        cap, used = _read_int(limit), _read_int(usage)
        if cap is not None and used is not None and cap < 1 << 60:  # v1 "no limit" is huge
            known.append(max(cap - used, 0))
    return min(known) if known else None


def data_budget(memory_budget: int | None = None) -> tuple[int | None, str]:
    """(bytes a data file may take, where that number comes from); None: no limit known."""
    if memory_budget is not None:
        return int(memory_budget), "the memory budget given"
    value = os.environ.get(BUDGET_ENV)
    if value:
        try:
            gib = float(value)
        except ValueError:
            raise ValueError(f"{BUDGET_ENV}={value!r} is not a number of GiB (e.g. 8)") from None
        return int(gib * GIB), f"{BUDGET_ENV}={value}"
    free = memory_available()
    return (None, "") if free is None else (free // 2, "half the memory available now")


def size_words(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / (1 << 20):.1f} MiB"


def _over(path: Path, what: str, limit: int, source: str) -> ValueError:
    return ValueError(
        f"{path} ({size_words(path.stat().st_size)}): {what}, over the budget of "
        f"{size_words(limit)} ({source}); split the file, free memory, or raise the "
        f"budget with {BUDGET_ENV}=N (GiB)"
    )


def check_whole_file(path: Path, fmt: str, memory_budget: int | None = None) -> None:
    """Refuse, before reading, a file read whole (``fmt`` "sms" or "parquet") whose
    estimated memory passes the budget."""
    limit, source = data_budget(memory_budget)
    need = path.stat().st_size * WHOLE_FILE_FACTOR[fmt]
    if limit is not None and need > limit:
        raise _over(path, f"reading it whole takes about {size_words(need)}", limit, source)


def check_read_at_once(path: Path, need: int, what: str, memory_budget: int | None = None) -> None:
    """Refuse, before reading, a part of ``path`` read at once that needs ``need`` bytes
    over the budget; ``what`` says which part, with ``{size}`` where ``need`` goes."""
    limit, source = data_budget(memory_budget)
    if limit is not None and need > limit:
        raise _over(path, what.format(size=size_words(need)), limit, source)


class Budget:
    """Counts what the kept rows of one file take (``keep``) and stops reading, with a
    one-line error, when that passes the budget."""

    def __init__(self, path: Path, memory_budget: int | None = None):
        self.path = path
        self.limit, self.source = data_budget(memory_budget)
        self.used = 0

    def keep(self, place: str, values: tuple) -> None:
        self.used += ROW_BYTES + sum(sys.getsizeof(v) for v in values)
        if self.limit is not None and self.used > self.limit:
            what = f"the rows up to {place} already take about {size_words(self.used)}"
            raise _over(self.path, what, self.limit, self.source)
