"""Length buckets and batch schedules: passes over texts of many lengths with few shapes."""

from __future__ import annotations

import numpy as np

BUCKET_STEP = 32  # training/eval batches are padded to a multiple of this many tokens


def bucket_length(longest: int, full: int, step: int = BUCKET_STEP) -> int:
    """Smallest multiple of ``step`` >= ``longest`` (at most ``full``): few shapes to
    compile, little padding."""
    return min(full, max(step, -(-longest // step) * step))


def prefix_schedule(
    lengths: np.ndarray, full: int, batch_size: int, bucketed: bool, step: int = BUCKET_STEP
) -> list[tuple[np.ndarray, int]]:
    """``(row indices, width)`` of each batch of a pass over texts. Bucketed: rows in
    length order, each batch cut to its bucket length; else every batch is ``full`` wide."""
    order = np.argsort(lengths, kind="stable") if bucketed else np.arange(len(lengths))
    batches = []
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        width = bucket_length(int(lengths[idx].max()), full, step) if bucketed else full
        batches.append((idx, width))
    return batches
