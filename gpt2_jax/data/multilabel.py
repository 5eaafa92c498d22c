"""Several labels per text: a labelled file whose label is a *set* of names, read into the
multi-label frame, the label order decided once, and the sets as a 0/1 matrix.

Three ways to write the sets (every cell checked, every problem named with its file,
line and column, as ``data.tables`` does for one label):

* a JSON Lines label that is a list: ``{"text": "...", "label": ["sports", "politics"]}``
  (``[]``: no label; a plain string or integer is a set of one);
* a label cell holding names between separators (``label_sep``, e.g. ``";"``:
  ``sports;politics``; an empty cell: no label), in CSV, TSV, JSON Lines or Parquet;
* one 0/1 column per label (``label_columns``: ``("sports", "politics")``), each cell
  0 or 1 (also ``"0"``, ``"1"``, ``true``, ``false``).

The multi-label frame has one row per example: ``text`` (str), ``labels`` (a tuple of
names, in file order, each once) and ``where`` ("tickets.csv line 17").
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from gpt2_jax.data import tables
from gpt2_jax.data.budget import Budget, check_whole_file
from gpt2_jax.data.cells import is_null, label_cell, shown, text_cell
from gpt2_jax.data.checks import check_labels
from gpt2_jax.data.records import Problems
from gpt2_jax.data.splits import Splits, split

ONE = (1, "1", True)
ZERO = (0, "0", False)


def read_label_sets(
    path: str | os.PathLike,
    *,
    fmt: str = "auto",
    text_column: str = "text",
    label_column: str = "label",
    label_sep: str | None = None,
    label_columns: Sequence[str] | None = None,
    memory_budget: int | None = None,
) -> pd.DataFrame:
    """The multi-label frame (``text``, ``labels``, ``where``) of a file: label sets in
    ``label_column`` (lists, or names between ``label_sep``), or one 0/1 column per name
    of ``label_columns``. Every problem is one ValueError naming file, line and column."""
    path, fmt = tables._file_and_format(path, fmt, "pandas")
    if fmt == "sms":
        raise ValueError(
            f"{path}: the SMS format has one label per message; write the texts and "
            "their label sets as CSV, TSV, JSON Lines or Parquet"
        )
    if fmt == "parquet":
        check_whole_file(path, fmt, memory_budget)
    names = tuple(label_columns) if label_columns else (label_column,)
    if text_column in names:
        raise ValueError(
            f"{path}: {text_column!r} is both the text column and a label column; "
            "name different columns with --text-column and --label-column(s)"
        )
    columns = (text_column, *names)
    check = _indicator_check(names) if label_columns else _set_check(label_sep)
    budget = Budget(path, memory_budget)
    places, cells = [], []
    for place, row in tables._rows(path, fmt, columns, check):
        budget.keep(place, (row[0], *row[1]))
        places.append(place)
        cells.append(row)
    if not cells:
        raise tables._no_rows(path, columns)
    frame = pd.DataFrame({"text": [c[0] for c in cells]})
    frame["labels"] = [c[1] for c in cells]
    frame["where"] = [f"{path.name} {place}" for place in places]
    return frame


def _set_check(sep: str | None):
    """The row check of a label-set column: ``(text, names)`` or None after a problem."""

    def check(problems: Problems, place: str, columns: tuple[str, ...], text, value):
        text, problem = text_cell(text)
        column = columns[0]
        if problem is None:
            column = columns[1]
            names, problem = label_set(value, sep)
        if problem is not None:
            problems.add(f"{place}, column {column!r}: {problem}")
            return None
        return text, names

    return check


def label_set(value, sep: str | None) -> tuple[tuple[str, ...], str | None]:
    """``(names, None)`` or ``((), what is wrong)`` for one label-set cell."""
    if isinstance(value, np.ndarray):  # a Parquet list column
        value = value.tolist()
    if is_null(value):
        return (), "no label set (null); write [] or an empty cell for a text with no label"
    if isinstance(value, str) and sep is not None:
        if not value.strip():
            return (), None
        pieces = [piece.strip() for piece in value.split(sep)]
        if not all(pieces):
            return (), (
                f"{shown(value)} has an empty name between the separators {sep!r}; "
                "remove the extra separator"
            )
        value = pieces
    elif isinstance(value, str) and not value.strip():
        return (), None
    if not isinstance(value, (list, tuple)):
        value = [value]
    names = []
    for item in value:
        name, problem = label_cell(item)
        if problem is not None:
            return (), f"{problem} (in the label set {shown(value)})"
        assert name is not None
        names.append(name)
    return tuple(dict.fromkeys(names)), None


def _indicator_check(names: tuple[str, ...]):
    """The row check of one 0/1 column per label: ``(text, names set to 1)``."""

    def check(problems: Problems, place: str, columns: tuple[str, ...], text, *flags):
        text, problem = text_cell(text)
        if problem is not None:
            problems.add(f"{place}, column {columns[0]!r}: {problem}")
            return None
        on = []
        for name, flag in zip(names, flags):
            value = flag.strip() if isinstance(flag, str) else flag
            if isinstance(value, (bool, np.bool_)):
                value = bool(value)
            elif isinstance(value, np.integer):
                value = int(value)
            if not any(value == v and type(value) is type(v) for v in ONE + ZERO):
                problems.add(
                    f"{place}, column {name!r}: {shown(flag)} is not 0 or 1; write 1 where the "
                    "text has this label and 0 where it has not"
                )
                return None
            if value in ONE:
                on.append(name)
        return text, tuple(on)

    return check


def label_order(
    frame: pd.DataFrame,
    explicit: Sequence[str] | None = None,
    *,
    source: str = "the data",
    column: str = "label",
) -> tuple[str, ...]:
    """The label order (index = output of the head): ``explicit`` (``--labels`` or the
    ``--label-columns`` order) as given, else every name in the sets, sorted as
    ``data.splits.class_names`` sorts classes. Names that differ only in case or
    spacing are refused (``check_labels``) unless ``explicit`` names them; at least two."""
    flat = [name for names in frame["labels"] for name in names]
    where = [w for names, w in zip(frame["labels"], frame["where"]) for _ in names]
    check_labels(flat, where, explicit=explicit, source=source, column=column)
    if explicit is not None:
        order = tuple(explicit)
        missing = sorted(set(flat) - set(order))
        if missing:
            first = where[flat.index(missing[0])]
            raise ValueError(
                f"{first}: label {shown(missing[0])} is not in the label list {list(order)}; "
                "add it to --labels"
            )
    else:
        present = list(dict.fromkeys(flat))
        integers = all(name.lstrip("-").isdigit() for name in present)
        order = tuple(sorted(present, key=(lambda s: (int(s), s)) if integers else None))
    if len(order) < 2:
        raise ValueError(
            f"{source}: the label sets name {len(order)} label(s) {list(order)}; several "
            "labels per text needs at least two (one label: train without --multi-label)"
        )
    return order


def label_matrix(frame: pd.DataFrame, labels: Sequence[str], what: str = "training") -> np.ndarray:
    """``[N, K]`` int8: 1 where row n has label k. A name outside ``labels`` is an error
    naming its row."""
    index = {name: k for k, name in enumerate(labels)}
    out = np.zeros((len(frame), len(labels)), np.int8)
    for row, (names, where) in enumerate(zip(frame["labels"], frame["where"])):
        for name in names:
            if name not in index:
                raise ValueError(
                    f"{where}: label {name!r} does not occur in the {what} data "
                    f"(labels: {', '.join(labels)}); remove it or add it there"
                )
            out[row, index[name]] = 1
    return out


def split_label_sets(frame: pd.DataFrame, sizes: tuple, seed: int, holdout_at=None) -> Splits:
    """The lab's shuffled cut (``data.splits.split``, the same rows for the same seed)
    of a multi-label frame; every split keeps ``labels``, and ``y`` is 0 (unused)."""
    one = frame.assign(y=np.zeros(len(frame), np.int32))
    one.attrs["classes"] = ("texts",)
    train, val, test = sizes
    return split(one, train, val, test, seed, holdout_at=holdout_at)
