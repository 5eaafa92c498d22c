"""A small, learnable spam/ham file in the SMS Spam Collection's format."""

from __future__ import annotations

import random
from pathlib import Path

SPAM = [
    "WIN a FREE prize now, call 0800 {n}",
    "URGENT! You have won {n} cash, text CLAIM",
    "Free entry: reply WIN to {n} for your award",
    "Congratulations! Claim your {n} prize today",
]
HAM = [
    "see you at home around {n}",
    "ok i will call you later",
    "are we still on for lunch at {n}",
    "thanks, talk to you tomorrow",
    "can you pick up milk on the way",
    "running {n} min late sorry",
]


def write_sms_file(path: Path, n_ham: int = 180, n_spam: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = [("ham", rng.choice(HAM)) for _ in range(n_ham)] + [
        ("spam", rng.choice(SPAM)) for _ in range(n_spam)
    ]
    rng.shuffle(rows)
    path.write_text(
        "".join(f"{label}\t{text.format(n=rng.randint(1, 99))}\n" for label, text in rows)
    )
    return path


def write_rows(path: Path, rows, header=("text", "label"), delimiter: str = ",") -> Path:
    """A CSV (or, with ``delimiter="\\t"``, TSV) file: ``header``, then ``rows``, quoted
    only where needed, as spreadsheet programs write them."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def labelled_frame(counts: dict, seed: int = 0):
    """A standard frame (``text``, ``label``, ``where``) holding ``counts[label]`` rows of
    each label in a seeded random order; texts are "<label> <i>", so they are unique."""
    import pandas as pd

    rows = [(f"{label} {i}", label) for label, n in counts.items() for i in range(n)]
    random.Random(seed).shuffle(rows)
    df = pd.DataFrame(rows, columns=["text", "label"])
    df["where"] = [f"frame.csv line {i + 2}" for i in range(len(df))]
    return df
