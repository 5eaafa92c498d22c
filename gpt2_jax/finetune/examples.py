"""A few of a run's own validation texts, saved in its folder (``examples.json``) for the
served page to offer: examples of the task the classifier was trained for, a few per
class, instead of one fixed set."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gpt2_jax.data.splits import Splits
from gpt2_jax.util.files import write_text_atomic

EXAMPLES_FILE = "examples.json"
PER_CLASS = 2
MAX_EXAMPLES = 20  # what the page reads back, at most
MAX_CHARS = 300  # a longer text is offered only when a class has no shorter one


def pick_examples(splits: Splits, classes: tuple[str, ...], per_class: int = PER_CLASS):
    """Up to ``per_class`` texts of each class, from validation (else test, else
    training), in the split's order, short ones first when a class has enough."""
    frame = next(f for f in (splits.val, splits.test, splits.train) if f is not None and len(f))
    picked = []
    for name in classes:
        texts = [str(t) for t in frame.loc[frame["label"] == name, "text"]]
        short = [t for t in texts if len(t) <= MAX_CHARS]
        picked += (short + [t for t in texts if len(t) > MAX_CHARS])[:per_class]
    return picked


def write_examples(run_dir: str | os.PathLike, texts: list[str]) -> None:
    write_text_atomic(Path(run_dir) / EXAMPLES_FILE, json.dumps(texts, ensure_ascii=False))


def read_examples(run_dir: str | os.PathLike) -> list[str] | None:
    """The run's examples; None when the folder has none or the file is not a list of
    texts (a damaged file is not trusted, and not an error: the page works without)."""
    path = Path(run_dir) / EXAMPLES_FILE
    try:
        texts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return None
    return texts[:MAX_EXAMPLES]
