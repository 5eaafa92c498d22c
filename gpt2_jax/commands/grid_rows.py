"""The grid's rows: the book's (with its published figures) or your own from a JSON
file, and reading a flag's value from a row's flags."""

from __future__ import annotations

import json
from pathlib import Path

# The book's rows (LLMs-from-scratch, ch06/02_bonus_additional-experiments) in this
# project's flags, with the figures the book publishes for them (pretrained weights,
# its balanced split, 5 epochs, batch 8, on an A100).
BOOK_ROWS = [
    # row, flags, (train acc, val acc, test acc, minutes)
    (1, [], (96.63, 99.33, 95.00, 0.28)),
    (2, ["--pool", "first"], (78.46, 80.54, 75.00, 0.28)),
    (3, ["--trainable", "last_layer"], (78.65, 79.87, 72.00, 0.25)),
    (4, ["--trainable", "last_two_blocks"], (98.85, 98.66, 98.33, 0.33)),
    (5, ["--trainable", "all"], (99.62, 96.64, 96.67, 0.69)),
    (6, ["--model-size", "355M"], (87.50, 91.28, 84.67, 0.75)),
    (7, ["--model-size", "774M"], (99.52, 98.66, 96.67, 1.50)),
    (8, ["--model-size", "1558M"], (99.81, 99.81, 98.33, 2.83)),
    (9, ["--model-size", "1558M", "--trainable", "all"], (100.00, 98.66, 98.67, 8.12)),
    (10, ["--weights", "random", "--trainable", "all"], (100.00, 96.64, 93.67, 0.69)),
    # LoRA: the book scales the adapters by alpha, this project by alpha / rank (the
    # LoRA paper's convention), so the book's alpha 16 and 8 at rank 16 are 256 and 128
    (
        11,
        ["--trainable", "lora", "--lora-rank", "16", "--lora-alpha", "256"],
        (100.00, 97.32, 96.67, 0.75),
    ),
    (
        12,
        [
            "--model-size",
            "1558M",
            "--trainable",
            "lora",
            "--lora-rank",
            "16",
            "--lora-alpha",
            "128",
        ],
        (100.00, 98.66, 98.33, 5.79),
    ),
    (13, ["--max-length", "context"], (83.08, 87.92, 78.33, 2.46)),
    (14, ["--batch-size", "1", "--pool", "last-real"], (100.00, 98.66, 98.00, 1.75)),
    (
        15,
        ["--batch-size", "1", "--accumulation-steps", "8", "--pool", "last-real"],
        (99.33, 98.66, 98.33, 1.70),
    ),
    (16, ["--pool", "last-real"], (99.42, 98.66, 98.33, 0.30)),
    (17, ["--disable-causal-mask"], (99.23, 98.66, 95.33, 0.29)),
    (18, ["--ignore-index", "50256"], (96.63, 99.33, 95.00, 0.28)),
    (19, ["--pool", "mean"], (97.79, 99.33, 96.33, 0.32)),
]
BOOK_CONTEXT = {
    13: "context length (1024)",
    14: "no padding (batch 1)",
    15: "no padding (batch 1, accumulation 8)",
    16: "flexible (last real token)",
    17: "longest; no causal mask",
    18: "longest; ignore_index for padding",
}
BOOK_TOKEN = {2: "first", 19: "last + pooled embeddings"}


def book_rows() -> list[dict]:
    return [
        {
            "name": f"{n:02d}",
            "book_row": n,
            "flags": flags,
            "book": dict(zip(("train_acc", "val_acc", "test_acc", "minutes"), figures)),
        }
        for n, flags, figures in BOOK_ROWS
    ]


def read_rows_file(path: Path) -> list[dict]:
    """Your rows: a JSON list of ``{"name": "...", "flags": ["--pool", "mean", ...]}``."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: --rows-file {path}: {err}") from None
    if not isinstance(rows, list):
        raise SystemExit(f"error: --rows-file {path}: expected a JSON list of rows")
    for i, row in enumerate(rows):
        ok = (
            isinstance(row, dict)
            and isinstance(row.get("name"), str)
            and row["name"]
            and "/" not in row["name"]
            and isinstance(row.get("flags"), list)
            and all(isinstance(f, str) for f in row["flags"])
        )
        if not ok:
            raise SystemExit(
                f"error: --rows-file {path}: row {i} must be "
                '{"name": "NAME", "flags": ["--flag", "value", ...]} '
                f"(a name without '/'), got {row!r}"
            )
    names = [row["name"] for row in rows]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: --rows-file {path}: row names repeat: {names}")
    return rows


def flag_value(flags: list[str], flag: str, default: str) -> str:
    """The last value given for ``flag`` in ``flags`` (as argparse reads it)."""
    value = default
    for i, item in enumerate(flags):
        if item == flag and i + 1 < len(flags):
            value = flags[i + 1]
        elif item.startswith(flag + "="):
            value = item.split("=", 1)[1]
    return value
