"""How ``classify`` writes its predictions: a table for ``--output`` (.csv or .jsonl),
tab-separated lines for stdout. Both can be written a chunk at a time: the chunks' text
joined is the text of the whole table."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gpt2_jax.util.files import atomic_write

if TYPE_CHECKING:  # pandas is imported for a table only: classify of texts needs none
    import pandas as pd

OUTPUT_FORMATS = (".csv", ".jsonl")
MIN_TEXT = 20  # characters of a text shown however narrow the terminal
SET_SEP = ";"  # between the names of a predicted label set, in CSV and on stdout


def prediction_table(texts: list[str], pred, labels: tuple[str, ...]) -> pd.DataFrame:
    """Columns text, label, p_<class>..., truncated; several labels per text: ``labels``
    (the predicted set: a JSON list, in CSV the names joined by ``;``) for ``label``."""
    import pandas as pd

    if getattr(pred, "sets", None) is not None:
        table = pd.DataFrame({"text": texts, "labels": [list(names) for names in pred.labels]})
    else:
        table = pd.DataFrame({"text": texts, "label": pred.labels})
    for k, name in enumerate(labels):
        table[f"p_{name}"] = pred.probs[:, k].astype(np.float64)
    table["truncated"] = pred.truncated
    return table


def table_text(table: pd.DataFrame, suffix: str, header: bool = True) -> str:
    """``table`` as the text of a ``suffix`` (.csv or .jsonl) file; ``header``: the CSV
    header line (the first chunk's only). One line per row in JSON Lines; CSV quotes a
    text that holds a comma, quote or line end."""
    if suffix.lower() == ".csv":
        if "labels" in table:  # a label set: its names joined by ';'
            table = table.assign(labels=table["labels"].map(SET_SEP.join))
        return table.to_csv(index=False, header=header)
    text = table.to_json(orient="records", lines=True, force_ascii=False)
    return text if text.endswith("\n") else text + "\n"


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Whole or not at all (``util.files.atomic_write``): never half a file under the name."""
    text = table_text(table, path.suffix)
    atomic_write(path, lambda part: part.write_bytes(text.encode("utf-8")))


def shown(text: str) -> str:
    """The text on one line of tab-separated output."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def clip(text: str, width: int) -> str:
    """``text`` as it is if it has at most ``width`` characters, else its start and
    ``...``, ``width`` characters in all."""
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def print_header(labels: tuple[str, ...]) -> None:
    print("\t".join(["label", *(f"p({name})" for name in labels), "text"]))


def print_rows(texts: list[str], pred, columns: int | None = None) -> None:
    """One tab-separated line per prediction; with ``columns`` (a terminal's width) each
    text is clipped so that its line fits, keeping at least ``MIN_TEXT`` characters."""
    for text, label, probs in zip(texts, pred.labels, pred.probs):
        label = label if isinstance(label, str) else SET_SEP.join(label)  # a label set
        start = "\t".join([label, *(f"{p:.4f}" for p in probs)]) + "\t"
        text = shown(text)
        if columns is not None:  # -1: a line exactly as wide as the terminal may wrap
            text = clip(text, max(MIN_TEXT, columns - len(start.expandtabs()) - 1))
        print(start + text)


def print_table(
    texts: list[str], pred, labels: tuple[str, ...], columns: int | None = None
) -> None:
    """The predictions, tab-separated, under a header line (see ``print_rows``)."""
    print_header(labels)
    print_rows(texts, pred, columns)


def terminal_columns() -> int | None:
    """The terminal's width when stdout is one, else None (piped output stays whole)."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None
