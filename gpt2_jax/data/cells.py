"""One cell of a labelled file checked: a text is a non-blank string, a label a non-blank
string or an integer. Used by ``data.tables``' readers, which name the place."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from gpt2_jax.data.records import Problems

CellCheck = Callable[..., "tuple | None"]  # (problems, place, columns, *cells): see check_cells
SHOWN = 60  # characters of a bad cell's repr quoted in a message


def shown(value) -> str:
    """``repr(value)``, cut to ``SHOWN`` characters with its full length said (a cell
    of megabytes must not become a message of megabytes)."""
    text = repr(value)
    if len(text) <= SHOWN:
        return text
    return f"{text[:SHOWN]}... ({len(text):,} characters)"


def check_cells(
    problems: Problems, place: str, columns: tuple[str, ...], text, label=None
) -> tuple | None:
    """(text[, label]) as strings, or None after noting what is wrong with them."""
    kinds = ("text", "label")
    values = (text, label)[: len(columns)]
    out = []
    for kind, column, value in zip(kinds, columns, values):
        value, problem = text_cell(value) if kind == "text" else label_cell(value)
        if problem:
            problems.add(f"{place}, column {column!r}: {problem}")
            return None
        out.append(value)
    return tuple(out)


def text_cell(value) -> tuple[str | None, str | None]:
    """(text, None) or (None, what is wrong): a text must be a non-blank string."""
    if is_null(value):
        return None, "no text (null)"
    if not isinstance(value, str):
        return None, f"text {shown(value)} is not a string ({type(value).__name__})"
    if not value.strip():
        return None, "empty text"
    return value, None


def label_cell(value) -> tuple[str | None, str | None]:
    """(label, None) or (None, what is wrong): a label is a non-blank string or an
    integer (kept as its decimal string); floats, booleans and nulls are refused, since
    1.0 vs 1 or true vs "true" would silently make different classes."""
    if is_null(value):
        return None, "no label (null)"
    if isinstance(value, (bool, np.bool_)):
        return None, f"label {shown(value)} is a boolean; write a name or an integer"
    if isinstance(value, (int, np.integer)):
        return str(int(value)), None
    if isinstance(value, (float, np.floating)):
        return None, f"label {shown(value)} is a float; write a name or an integer"
    if isinstance(value, (list, tuple)):
        return (
            None,
            f"label {shown(value)} is a list; for several labels per text add --multi-label",
        )
    if not isinstance(value, str):
        return None, (
            f"label {shown(value)} is neither a name nor an integer ({type(value).__name__})"
        )
    if not value.strip():
        return None, "empty label"
    return value, None


def is_null(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
