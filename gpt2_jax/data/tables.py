"""Your labelled files read into one standard frame: CSV, TSV, JSON Lines, Parquet and
the SMS collection's format, every cell checked, every problem named with its file and line.

Every reader returns the *standard frame*, one row per example:

* ``text``  (str) the text to classify;
* ``label`` (str) the class name as written in the file (an integer label becomes its
  decimal string: ``3`` -> ``"3"``); absent when the file is read with
  ``label_column=None`` (texts to classify);
* ``where`` (str) where the row came from, for error messages: ``"tickets.csv line 17"``
  (the line its record starts on, 1-based, the header line counted), ``"x.parquet row 5"``
  (1-based).

What comes next: ``data.splits`` (class order, class ids, the train / validation / test
cut, with the lab's exact shuffle) and ``data.encoding`` (token ids, batch order).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gpt2_jax.data import sms
from gpt2_jax.data.budget import Budget, check_whole_file
from gpt2_jax.data.records import (
    SMS_FILE_NAME,
    SMS_QUOTING,
    CsvRecordError,
    Problems,
    iter_csv_records,
    text_lines,
)

FORMATS = ("sms", "csv", "tsv", "jsonl", "parquet")
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}


# --------------------------------------------------------------------------- reading


def guess_format(path: str | os.PathLike) -> str:
    """The format ``fmt="auto"`` picks for ``path``: by extension (case ignored), or
    "sms" for a file named SMSSpamCollection."""
    path = Path(path)
    if path.name == SMS_FILE_NAME:
        return "sms"
    suffix = path.suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    known = ", ".join(EXTENSIONS)
    what = f"extension {path.suffix!r}" if path.suffix else "no extension"
    raise ValueError(
        f"{path}: {what}, so the format is unknown; supported: {known}, or a "
        f"file named {SMS_FILE_NAME}; use --format {{{','.join(FORMATS)}}} "
        "to force one"
    )


def read_table(
    path: str | os.PathLike,
    *,
    fmt: str = "auto",
    text_column: str = "text",
    label_column: str | None = "label",
    sms_quoting: str = "pandas",
    memory_budget: int | None = None,
) -> pd.DataFrame:
    """The standard frame (``text``, ``label``, ``where``; see the module docstring) of a
    labelled text file.

    ``fmt``: one of ``FORMATS`` or "auto" (see ``guess_format``). ``text_column`` /
    ``label_column`` name the columns (CSV/TSV header, JSONL keys, parquet columns);
    ``label_column=None`` reads only the texts (no ``label`` column). The "sms" format
    has no column names, so both are ignored for it (it always has labels). Other
    columns are ignored. ``sms_quoting`` (one of ``SMS_QUOTING``) is the "sms" format's
    quoting (see ``gpt2_jax.data.sms.read_sms_spam``: its frame also carries
    ``attrs["joined"]``, the messages that took several lines). A leading UTF-8
    byte-order mark is dropped in every text format. Every problem is a ValueError
    naming the file and line.

    Memory: CSV, TSV and JSON Lines are read a block at a time, keeping only the two
    columns' cells, and reading stops with an error naming the file as soon as the kept
    rows pass the budget; SMS and Parquet files are read whole, so their size is checked
    first (see ``gpt2_jax.data.budget``: ``memory_budget`` in bytes, else the
    environment's ``GPT2_JAX_DATA_BUDGET_GIB``, else half the memory available).
    """
    path = Path(path)
    if fmt == "auto":
        fmt = guess_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)} or auto")
    if sms_quoting not in SMS_QUOTING:
        raise ValueError(
            f"unknown SMS quoting {sms_quoting!r}; expected one of {', '.join(SMS_QUOTING)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if fmt in ("sms", "parquet"):
        check_whole_file(path, fmt, memory_budget)
    if fmt == "sms":
        return sms.read_sms_spam(path, quoting=sms_quoting)
    if label_column is not None and label_column == text_column:
        raise ValueError(
            f"{path}: text and label column are both {text_column!r}; name two "
            "different columns with --text-column and --label-column"
        )
    columns = (text_column,) if label_column is None else (text_column, label_column)
    kept = _Kept(path, columns, Budget(path, memory_budget))
    if fmt in ("csv", "tsv"):
        return _read_delimited(path, "," if fmt == "csv" else "\t", kept)
    if fmt == "jsonl":
        return _read_jsonl(path, kept)
    return _read_parquet(path, kept)


class _Kept:
    """The rows a reader keeps: ``cells[i]`` = (text[, label]) of the row at
    ``places[i]`` ("line 3"), counted against the memory budget."""

    def __init__(self, path: Path, columns: tuple[str, ...], budget: Budget):
        self.path, self.columns, self.budget = path, columns, budget
        self.places: list[str] = []
        self.cells: list[tuple] = []

    def check(self, problems: Problems, place: str, values) -> None:
        """One record's cells checked (see ``_check_cells``) and, when fine, kept with
        its place; the record loop of every reader goes through here."""
        checked = _check_cells(problems, place, self.columns, *values)
        if checked is not None:
            self.budget.keep(place, checked)
            self.places.append(place)
            self.cells.append(checked)

    def frame(self) -> pd.DataFrame:
        return _frame(self.path, self.columns, self.places, self.cells)


def _frame(
    path: Path, columns: tuple[str, ...], places: list[str], cells: list[tuple]
) -> pd.DataFrame:
    """The standard frame from checked cells: ``cells[i]`` = (text[, label]) of the row
    at ``places[i]`` ("line 3"); ``columns`` = (text column[, label column])."""
    if not cells:
        raise ValueError(
            f"{path}: no rows; expected a {columns[0]!r} column"
            + (f" and a {columns[1]!r} column" if len(columns) > 1 else "")
            + " with at least one row"
        )
    names = ["text", "label"][: len(columns)]
    df = pd.DataFrame(cells, columns=names)  # string columns, as pandas reads the SMS file
    df["where"] = [f"{path.name} {place}" for place in places]
    return df


def _check_cells(
    problems: Problems, place: str, columns: tuple[str, ...], text, label=None
) -> tuple | None:
    """(text[, label]) as strings, or None after noting what is wrong with them."""
    kinds = ("text", "label")
    values = (text, label)[: len(columns)]
    out = []
    for kind, column, value in zip(kinds, columns, values):
        value, problem = _text_cell(value) if kind == "text" else _label_cell(value)
        if problem:
            problems.add(f"{place}, column {column!r}: {problem}")
            return None
        out.append(value)
    return tuple(out)


def _text_cell(value) -> tuple[str | None, str | None]:
    """(text, None) or (None, what is wrong): a text must be a non-blank string."""
    if _is_null(value):
        return None, "no text (null)"
    if not isinstance(value, str):
        return None, f"text {value!r} is not a string ({type(value).__name__})"
    if not value.strip():
        return None, "empty text"
    return value, None


def _label_cell(value) -> tuple[str | None, str | None]:
    """(label, None) or (None, what is wrong): a label is a non-blank string or an
    integer (kept as its decimal string); floats, booleans and nulls are refused, since
    1.0 vs 1 or true vs "true" would silently make different classes."""
    if _is_null(value):
        return None, "no label (null)"
    if isinstance(value, (bool, np.bool_)):
        return None, f"label {value!r} is a boolean; write a name or an integer"
    if isinstance(value, (int, np.integer)):
        return str(int(value)), None
    if isinstance(value, (float, np.floating)):
        return None, f"label {value!r} is a float; write a name or an integer"
    if not isinstance(value, str):
        return None, (f"label {value!r} is neither a name nor an integer ({type(value).__name__})")
    if not value.strip():
        return None, "empty label"
    return value, None


def _is_null(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _read_delimited(path: Path, delimiter: str, kept: _Kept) -> pd.DataFrame:
    """CSV (``delimiter=","``) or TSV with a header row and standard quoting.

    Python's csv module parses it (every cell a string, nothing turned into NaN, like
    pandas with ``dtype=str, keep_default_na=False``): the same parser then gives the
    values and the line each record starts on, so ``where`` cannot disagree with them.
    The file is read a block at a time; only the wanted cells are kept."""
    name = "tab" if delimiter == "\t" else "comma"
    lines = text_lines(path, newline="")
    records = iter_csv_records(lines, delimiter, longest=path.stat().st_size)
    try:
        _, _, header = next(records, (0, 0, None))
        if header is None:
            raise ValueError(
                f"{path}: empty file; expected a header row naming the columns "
                f"(e.g. {delimiter.join(kept.columns)}) and rows under it"
            )
        index = _column_index(path, header, kept.columns)
        problems = Problems(path, "fill in or remove these rows")
        for start, end, row in records:
            _check_record(problems, kept, (start, end), row, header, index, name)
            if problems.full:
                problems.raise_if_any(more=True)
    except CsvRecordError as err:
        hint = (
            "a quote opened here is never closed"
            if err.reason == "unexpected end of data"
            else f"{err.reason} (on line {err.line})"
        )
        raise ValueError(
            f'{path} line {err.start}: {hint}; a field that starts with " must '
            f'end with " right before a {name} or the line end, and a " inside '
            'it must be doubled ("")'
        ) from None
    problems.raise_if_any()
    return kept.frame()


def _check_record(
    problems: Problems, kept: _Kept, lines: tuple[int, int], row: list, header: list, index, name
) -> None:
    """One CSV/TSV record (on ``lines`` first..last) checked and kept; ``index``: the
    wanted columns' positions; ``name``: the delimiter's name."""
    start, end = lines
    place = f"line {start}"
    if len(row) == len(header):
        kept.check(problems, place, [row[i] for i in index])
        return
    span = (
        f" (the record runs over lines {start}-{end}: is a quote not closed?)"
        if end > start
        else ""
    )
    problems.add(
        f"{place}: {len(row)} fields, but the header has {len(header)}{span}; "
        f'quote a field that holds a {name} ("...")'
    )


def _column_index(path: Path, header: list[str], columns: tuple[str, ...]) -> list[int]:
    """Position of each wanted column in the header; a missing or doubled one is an error
    that lists the columns there are."""
    for column in columns:
        if header.count(column) > 1:
            raise ValueError(
                f"{path}: the header names column {column!r} "
                f"{header.count(column)} times; rename all but one"
            )
    _require_columns(path, header, columns)
    return [header.index(column) for column in columns]


def _require_columns(
    path: Path, present: Sequence[str], columns: tuple[str, ...], place: str = ""
) -> None:
    """Error naming every wanted column that is not in ``present`` and the flag to use."""
    flags = ("--text-column", "--label-column")
    missing = [(c, flag) for c, flag in zip(columns, flags) if c not in present]
    if not missing:
        return
    what = " and ".join(f"no column {c!r}" for c, _ in missing)
    use = " / ".join(flag for _, flag in missing)
    there = ", ".join(repr(c) for c in present) or "none"
    raise ValueError(
        f"{path}{' ' + place if place else ''}: {what} (columns: {there}); "
        f"name the right one with {use}"
    )


def _read_jsonl(path: Path, kept: _Kept) -> pd.DataFrame:
    """One JSON object per line (blank lines skipped); ``kept.columns`` are its keys. A
    key twice in one object is refused (JSON parsers keep the last one silently)."""
    columns = kept.columns
    example = ", ".join(f'"{c}": "..."' for c in columns)
    problems = Problems(
        path, f"fix or remove these lines; each holds one JSON object like {{{example}}}"
    )
    # newline "\n" only: str.splitlines would also split at U+2028 etc., which JSON
    # strings may hold unescaped
    for number, line in enumerate(text_lines(path, newline="\n"), start=1):
        if not line.strip():
            continue
        place = f"line {number}"
        try:
            record = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as err:
            problems.add(f"{place}: not valid JSON ({err.msg} at column {err.colno})")
        except _DuplicateKey as err:
            problems.add(f"{place}: key {err.key!r} appears twice in one object; keep one")
        else:
            if not isinstance(record, dict):
                problems.add(f"{place}: a JSON {type(record).__name__}, not an object")
            elif any(c not in record for c in columns):
                _require_columns(path, list(record), columns, place)
            else:
                kept.check(problems, place, [record[c] for c in columns])
        if problems.full:
            problems.raise_if_any(more=True)
    problems.raise_if_any()
    return kept.frame()


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """``json.loads``'s ``object_pairs_hook``: the object as a dict, or ``_DuplicateKey``
    for its first key that occurs twice."""
    out = dict(pairs)
    if len(out) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


def _read_parquet(path: Path, kept: _Kept) -> pd.DataFrame:
    """A parquet file through pandas (needs pyarrow or fastparquet); ``where`` counts
    rows from 1."""
    try:
        import pyarrow  # noqa: F401  (pandas' default engine)
    except ImportError:
        try:
            import fastparquet  # noqa: F401  (pandas' other engine)
        except ImportError:
            raise ImportError(
                f"reading {path.name} needs pyarrow: pip install 'gpt2_jax[parquet]'"
            ) from None
    table = pd.read_parquet(path)
    columns = kept.columns
    _require_columns(path, [str(c) for c in table.columns], columns)
    problems = Problems(path, "fill in or remove these rows")
    values = zip(*(table[c].tolist() for c in columns))  # tolist: numpy scalars -> Python
    for number, row in enumerate(values, start=1):
        kept.check(problems, f"row {number}", row)
        if problems.full:
            problems.raise_if_any(more=True)
    problems.raise_if_any()
    return kept.frame()
