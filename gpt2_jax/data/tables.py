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
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from gpt2_jax.data import sms
from gpt2_jax.data.budget import Budget, check_whole_file
from gpt2_jax.data.cells import CellCheck, check_cells
from gpt2_jax.data.parquet import ParquetColumns, checked_rows, has_pyarrow, parquet_rows
from gpt2_jax.data.records import (
    FORMATS,
    SMS_FILE_NAME,
    SMS_QUOTING,
    CsvRecordError,
    Problems,
    iter_csv_records,
    require_columns,
    text_lines,
)

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
    path, fmt = _file_and_format(path, fmt, sms_quoting)
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
    for place, cells in _rows(path, fmt, columns):
        kept.keep(place, cells)
    return kept.frame()


def iter_rows(
    path: str | os.PathLike,
    *,
    fmt: str = "auto",
    text_column: str = "text",
    memory_budget: int | None = None,
) -> Iterator[tuple[str, str]]:
    """``(place, text)`` of every row of a file of texts to classify ("line 3", "row 5"
    in a Parquet file), checked as
    ``read_table(..., label_column=None)`` checks them (the same errors, raised when the
    reading reaches them; an empty file raises its error at the end).

    CSV, TSV and JSON Lines are read a block at a time and nothing is kept, so memory
    does not grow with the file; Parquet a row group at a time where pyarrow is installed
    (the largest group's text column checked against the budget first, ``data.parquet``);
    SMS files, and Parquet without pyarrow, are read whole (their size checked first, as
    in ``read_table``)."""
    path, fmt = _file_and_format(path, fmt, "pandas")
    if fmt == "parquet" and has_pyarrow():  # a row group at a time
        parquet = ParquetColumns(path)
        require_columns(path, parquet.names, (text_column,))
        parquet.check_budget((text_column,), memory_budget)
        rows = checked_rows(path, parquet.values((text_column,)), (text_column,), check_cells)
        yield from ((place, text) for place, (text,) in _counted(rows, path, text_column))
        return
    if fmt in ("sms", "parquet"):
        frame = read_table(
            path, fmt=fmt, text_column=text_column, label_column=None, memory_budget=memory_budget
        )
        places = (where.removeprefix(f"{path.name} ") for where in frame["where"].tolist())
        yield from zip(places, frame["text"].tolist())
        return
    for place, (text,) in _counted(_rows(path, fmt, (text_column,)), path, text_column):
        yield place, text


def _counted(rows: Iterator[tuple[str, tuple]], path: Path, text_column: str):
    """``rows`` as they come; a file without any is refused at the end."""
    count = 0
    for row in rows:
        count += 1
        yield row
    if not count:
        raise _no_rows(path, (text_column,))


def _file_and_format(path: str | os.PathLike, fmt: str, sms_quoting: str) -> tuple[Path, str]:
    """The file (which must exist) and its format (``fmt``, or guessed for "auto")."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a folder; the data must be a file (CSV, TSV, "
            "JSON Lines, Parquet or SMSSpamCollection) inside it"
        )
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
    return path, fmt


def _rows(
    path: Path, fmt: str, columns: tuple[str, ...], check: CellCheck = check_cells
) -> Iterator[tuple[str, tuple]]:
    """``(place, cells)`` of every row of a CSV, TSV, JSONL or parquet file, checked by
    ``check`` (``check_cells``; ``data.multilabel`` gives its own for label sets)."""
    if fmt in ("csv", "tsv"):
        return _delimited_rows(path, "," if fmt == "csv" else "\t", columns, check)
    if fmt == "jsonl":
        return _jsonl_rows(path, columns, check)
    return parquet_rows(path, columns, check)


class _Kept:
    """The rows a reader keeps: ``cells[i]`` = (text[, label]) of the row at
    ``places[i]`` ("line 3"), counted against the memory budget."""

    def __init__(self, path: Path, columns: tuple[str, ...], budget: Budget):
        self.path, self.columns, self.budget = path, columns, budget
        self.places: list[str] = []
        self.cells: list[tuple] = []

    def keep(self, place: str, cells: tuple) -> None:
        """One row's checked cells (see ``check_cells``), kept with its place."""
        self.budget.keep(place, cells)
        self.places.append(place)
        self.cells.append(cells)

    def frame(self) -> pd.DataFrame:
        return _frame(self.path, self.columns, self.places, self.cells)


def _frame(
    path: Path, columns: tuple[str, ...], places: list[str], cells: list[tuple]
) -> pd.DataFrame:
    """The standard frame from checked cells: ``cells[i]`` = (text[, label]) of the row
    at ``places[i]`` ("line 3"); ``columns`` = (text column[, label column])."""
    if not cells:
        raise _no_rows(path, columns)
    names = ["text", "label"][: len(columns)]
    df = pd.DataFrame(cells, columns=names)  # string columns, as pandas reads the SMS file
    df["where"] = [f"{path.name} {place}" for place in places]
    return df


def _no_rows(path: Path, columns: tuple[str, ...]) -> ValueError:
    return ValueError(
        f"{path}: no rows; expected a {columns[0]!r} column"
        + (f" and a {columns[1]!r} column" if len(columns) > 1 else "")
        + " with at least one row"
    )


def _delimited_rows(
    path: Path, delimiter: str, columns: tuple[str, ...], check: CellCheck = check_cells
) -> Iterator[tuple[str, tuple]]:
    """CSV (``delimiter=","``) or TSV with a header row and standard quoting.

    Python's csv module parses it (every cell a string, nothing turned into NaN, like
    pandas with ``dtype=str, keep_default_na=False``): the same parser then gives the
    values and the line each record starts on, so ``where`` cannot disagree with them.
    The file is read a block at a time; only the wanted cells are given on."""
    name = "tab" if delimiter == "\t" else "comma"
    lines = text_lines(path, newline="")
    records = iter_csv_records(lines, delimiter, longest=path.stat().st_size)
    try:
        _, _, header = next(records, (0, 0, None))
        if header is None:
            raise ValueError(
                f"{path}: empty file; expected a header row naming the columns "
                f"(e.g. {delimiter.join(columns)}) and rows under it"
            )
        index = _column_index(path, header, columns)
        problems = Problems(path, "fill in or remove these rows")
        for start, end, row in records:
            checked = _check_record(
                problems, columns, (start, end), row, header, index, name, check
            )
            if checked is not None:
                yield f"line {start}", checked
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


def _check_record(
    problems: Problems,
    columns: tuple[str, ...],
    lines: tuple[int, int],
    row: list,
    header: list,
    index,
    name,
    check: CellCheck = check_cells,
) -> tuple | None:
    """One CSV/TSV record's wanted cells (on ``lines`` first..last), checked (None after
    noting a problem); ``index``: the wanted columns' positions; ``name``: the
    delimiter's name."""
    start, end = lines
    place = f"line {start}"
    if len(row) == len(header):
        return check(problems, place, columns, *[row[i] for i in index])
    span = (
        f" (the record runs over lines {start}-{end}: is a quote not closed?)"
        if end > start
        else ""
    )
    problems.add(
        f"{place}: {len(row)} fields, but the header has {len(header)}{span}; "
        f'quote a field that holds a {name} ("...")'
    )
    return None


def _column_index(path: Path, header: list[str], columns: tuple[str, ...]) -> list[int]:
    """Position of each wanted column in the header; a missing or doubled one is an error
    that lists the columns there are."""
    for column in columns:
        if header.count(column) > 1:
            raise ValueError(
                f"{path}: the header names column {column!r} "
                f"{header.count(column)} times; rename all but one"
            )
    require_columns(path, header, columns)
    return [header.index(column) for column in columns]


def _jsonl_rows(
    path: Path, columns: tuple[str, ...], check: CellCheck = check_cells
) -> Iterator[tuple[str, tuple]]:
    """One JSON object per line (blank lines skipped); ``columns`` are its keys. A
    key twice in one object is refused (JSON parsers keep the last one silently)."""
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
                require_columns(path, list(record), columns, place)
            else:
                checked = check(problems, place, columns, *[record[c] for c in columns])
                if checked is not None:
                    yield place, checked
        if problems.full:
            problems.raise_if_any(more=True)
    problems.raise_if_any()


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
