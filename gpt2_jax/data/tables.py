"""Labelled text: read, name the classes, split, encode, batch.

Every reader returns the *standard frame*, one row per example:

* ``text``  (str) the text to classify;
* ``label`` (str) the class name as written in the file (an integer label becomes its
  decimal string: ``3`` -> ``"3"``); absent when the file is read with
  ``label_column=None`` (texts to classify);
* ``where`` (str) where the row came from, for error messages: ``"tickets.csv line 17"``
  (the line its record starts on, 1-based, the header line counted), ``"x.parquet row 5"``
  (1-based).

``class_names`` decides the class order once, from the training file (or as given);
``add_class_ids`` then adds ``y`` (int32 class id) to any frame; ``split`` shuffles with
``df.sample(frac=1, random_state=seed)`` and cuts train / validation / test, so the SMS
lab (``gpt2_jax.data.sms``) keeps its exact numbers; ``encode_splits`` turns texts into
padded token ids.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gpt2_jax.data import sms
from gpt2_jax.data.records import (
    SMS_FILE_NAME,
    SMS_QUOTING,
    CsvRecordError,
    Problems,
    csv_records,
    decode,
)
from gpt2_jax.data.tokenizer import END_OF_TEXT_ID

PAD_ID = END_OF_TEXT_ID
FORMATS = ("sms", "csv", "tsv", "jsonl", "parquet")
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
_INTEGER = re.compile(r"-?[0-9]+")  # an integer label as written (ASCII digits only)


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
    if fmt == "sms":
        return sms.read_sms_spam(path, quoting=sms_quoting)
    if label_column is not None and label_column == text_column:
        raise ValueError(
            f"{path}: text and label column are both {text_column!r}; name two "
            "different columns with --text-column and --label-column"
        )
    columns = (text_column,) if label_column is None else (text_column, label_column)
    if fmt in ("csv", "tsv"):
        return _read_delimited(path, "," if fmt == "csv" else "\t", columns)
    if fmt == "jsonl":
        return _read_jsonl(path, columns)
    return _read_parquet(path, columns)


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


def _keep_checked(
    problems: Problems, place: str, columns: tuple[str, ...], values, places: list, cells: list
) -> None:
    """One record's cells checked (see ``_check_cells``) and, when fine, kept with its
    place; the record loop of every reader goes through here."""
    checked = _check_cells(problems, place, columns, *values)
    if checked is not None:
        places.append(place)
        cells.append(checked)


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


def _read_delimited(path: Path, delimiter: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """CSV (``delimiter=","``) or TSV with a header row and standard quoting.

    Python's csv module parses it (every cell a string, nothing turned into NaN, like
    pandas with ``dtype=str, keep_default_na=False``): the same parser then gives the
    values and the line each record starts on, so ``where`` cannot disagree with them."""
    text = decode(path, path.read_bytes())
    name = "tab" if delimiter == "\t" else "comma"
    try:
        records = csv_records(text, delimiter)
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
    if not records:
        raise ValueError(
            f"{path}: empty file; expected a header row naming the columns "
            f"(e.g. {delimiter.join(columns)}) and rows under it"
        )
    (_, _, header), rows = records[0], records[1:]
    index = _column_index(path, header, columns)
    problems = Problems(path, "fill in or remove these rows")
    places: list[str] = []
    cells: list[tuple] = []
    for start, end, row in rows:
        place = f"line {start}"
        if len(row) != len(header):
            span = (
                f" (the record runs over lines {start}-{end}: is a quote not closed?)"
                if end > start
                else ""
            )
            problems.add(
                f"{place}: {len(row)} fields, but the header has {len(header)}{span}; "
                f'quote a field that holds a {name} ("...")'
            )
        else:
            _keep_checked(problems, place, columns, [row[i] for i in index], places, cells)
        if problems.full:
            problems.raise_if_any(more=True)
    problems.raise_if_any()
    return _frame(path, columns, places, cells)


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


def _read_jsonl(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """One JSON object per line (blank lines skipped); ``columns`` are its keys."""
    text = decode(path, path.read_bytes())
    example = ", ".join(f'"{c}": "..."' for c in columns)
    problems = Problems(
        path, f"fix or remove these lines; each holds one JSON object like {{{example}}}"
    )
    places: list[str] = []
    cells: list[tuple] = []
    # split on "\n" only: str.splitlines would also split at U+2028 etc., which JSON
    # strings may hold unescaped
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        place = f"line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            problems.add(f"{place}: not valid JSON ({err.msg} at column {err.colno})")
        else:
            if not isinstance(record, dict):
                problems.add(f"{place}: a JSON {type(record).__name__}, not an object")
            elif any(c not in record for c in columns):
                _require_columns(path, list(record), columns, place)
            else:
                _keep_checked(problems, place, columns, [record[c] for c in columns], places, cells)
        if problems.full:
            problems.raise_if_any(more=True)
    problems.raise_if_any()
    return _frame(path, columns, places, cells)


def _read_parquet(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
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
    _require_columns(path, [str(c) for c in table.columns], columns)
    problems = Problems(path, "fill in or remove these rows")
    places: list[str] = []
    cells: list[tuple] = []
    values = zip(*(table[c].tolist() for c in columns))  # tolist: numpy scalars -> Python
    for number, row in enumerate(values, start=1):
        place = f"row {number}"
        _keep_checked(problems, place, columns, row, places, cells)
        if problems.full:
            problems.raise_if_any(more=True)
    problems.raise_if_any()
    return _frame(path, columns, places, cells)


# --------------------------------------------------------------------------- classes


def class_names(
    labels: Iterable[str],
    explicit: Sequence[str] | None = None,
    *,
    where: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """The class order (index = class id) for the labels of the training data.

    ``explicit`` (names, e.g. from the command line) is used as is; it may name classes
    the data lacks, but must name every label present and none twice. Otherwise the
    rule is: if every label is an integer (``"-1"``, ``"3"``, ``"10"``) they are in
    numeric order ("1", "2", "10"), else in Python's string order (so "ham" = 0,
    "spam" = 1, as in the lab). ``where`` (the frame's ``where`` column) lets an error
    say where a label occurs. At least two different labels must be present.
    """
    labels = list(labels)
    where = list(where) if where is not None else None
    if not all(isinstance(label, str) for label in labels):
        raise ValueError("labels must be strings (a standard frame's 'label' column)")
    present = list(dict.fromkeys(labels))  # first-appearance order, for messages
    if len(present) < 2:
        if not present:
            raise ValueError("no labelled rows; a classifier needs at least two classes")
        raise ValueError(
            f"every row is labelled {present[0]!r}; a classifier needs at least two classes"
        )
    if explicit is None:
        if all(_INTEGER.fullmatch(label) for label in present):
            return tuple(sorted(present, key=lambda s: (int(s), s)))
        return tuple(sorted(present))
    names = tuple(explicit)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ValueError(f"class names must be strings, got {bad!r}")
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ValueError(
            f"the class list {list(names)} names {', '.join(map(repr, doubled))} more than once"
        )
    missing = [label for label in present if label not in names]
    if missing:
        first = f" (first at {where[labels.index(missing[0])]})" if where is not None else ""
        raise ValueError(
            f"the class list {list(names)} lacks the label(s) "
            f"{', '.join(map(repr, missing))} of the data{first}; add them"
        )
    return names


def add_class_ids(df: pd.DataFrame, classes: Sequence[str], what: str = "training") -> pd.DataFrame:
    """A copy of ``df`` with ``y`` (int32, index into ``classes``); ``classes`` is also
    kept in ``df.attrs["classes"]`` for messages. A label outside ``classes`` is an
    error naming its row: "test.csv line 5: label 'x' does not occur in the training
    data (classes: ...)"; ``what`` names where the classes came from."""
    classes = tuple(classes)
    ids = df["label"].map({name: k for k, name in enumerate(classes)})
    unknown = ids.isna().to_numpy()
    if unknown.any():
        rows = np.flatnonzero(unknown)
        first = rows[0]
        place = df["where"].iloc[first] if "where" in df else f"row {first + 1}"
        more = (
            f" ({len(rows) - 1} more rows have labels outside the classes)" if len(rows) > 1 else ""
        )
        raise ValueError(
            f"{place}: label {df['label'].iloc[first]!r} does not occur in the "
            f"{what} data (classes: {', '.join(classes)}){more}"
        )
    out = df.copy()
    out["y"] = ids.to_numpy().astype(np.int32)
    out.attrs["classes"] = classes
    return out


def class_counts(y, k: int) -> np.ndarray:
    """Rows per class: ``[k]`` int64 from class ids ``y`` ``[N]`` (all in ``0..k-1``)."""
    y = np.asarray(y, np.int64)
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"class ids must be in 0..{k - 1}, got {y.min()}..{y.max()}")
    return np.bincount(y, minlength=k)


def _classes_of(df: pd.DataFrame) -> tuple[str, ...]:
    """Class names for messages: those ``add_class_ids`` left in ``attrs``, else ids."""
    classes = df.attrs.get("classes")
    if classes is None:
        k = int(df["y"].max()) + 1 if len(df) else 0
        classes = tuple(str(i) for i in range(k))
    return tuple(classes)


# --------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    def items(self):
        return (("train", self.train), ("val", self.val), ("test", self.test))


def balance_classes(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Undersample every class to the rarest one: a larger class is replaced by
    ``.sample(n_min, random_state=seed)`` of its rows, a class of ``n_min`` rows is kept
    whole, and the classes are concatenated by id (``y``) ascending. For ham/spam this
    is the book's ``pd.concat([ham.sample(len(spam), random_state=seed), spam])``."""
    groups = [df[df["y"] == k] for k in np.unique(df["y"])]  # classes present, by id
    n_min = min(len(g) for g in groups)
    parts = [g.sample(n_min, random_state=seed) if len(g) > n_min else g for g in groups]
    out = pd.concat(parts).reset_index(drop=True)
    out.attrs = dict(df.attrs)  # concat keeps attrs only in some pandas versions
    return out


def _row_count(size, n: int, name: str) -> int:
    """Rows meant by a split size: an int count, or a float in (0, 1) = that fraction of
    the ``n`` rows, rounded to the nearest count (halves up)."""
    if isinstance(size, (bool, np.bool_)):
        raise ValueError(f"{name} size must be a count or a fraction in (0, 1), got {size!r}")
    if isinstance(size, (int, np.integer)):
        if size < 0 or (name == "train" and size == 0):
            raise ValueError(f"split sizes must be positive: {name} size {size}")
        return int(size)
    if isinstance(size, (float, np.floating)) and 0 < size < 1:
        return int(math.floor(size * n + 0.5))
    raise ValueError(f"{name} size must be a count or a fraction in (0, 1), got {size!r}")


def split(
    df: pd.DataFrame,
    train_size: int | float,
    val_size: int | float,
    test_size: int | float | None,
    seed: int = 123,
    balance: bool = False,
    stratify: bool = False,
) -> Splits:
    """Train / validation / test frames from ``df`` (which needs ``y``: ``add_class_ids``).

    Sizes are row counts, or floats in (0, 1) = fractions of the rows (after balancing,
    see ``balance_classes``); ``test_size=None`` takes every row after validation.
    The rows are shuffled once with ``df.sample(frac=1, random_state=seed)``. Without
    ``stratify`` the splits are consecutive slices of the shuffled frame (the lab's
    way). With ``stratify`` each class's rows, in shuffled order, are cut in proportion
    (see ``stratified_counts``), so every split has about the class proportions of the
    whole and at least one row of each class; each split keeps the shuffled order.
    """
    if "y" not in df:
        raise ValueError("the frame has no class ids 'y'; add them with add_class_ids first")
    if balance:
        df = balance_classes(df, seed)
    classes = _classes_of(df)
    n = len(df)
    a, b = _row_count(train_size, n, "train"), _row_count(val_size, n, "val")
    c = n - a - b if test_size is None else _row_count(test_size, n, "test")
    if a + b + c > n or c < 0:
        after = " after balancing the classes" if balance else ""
        raise ValueError(
            f"train {a} + val {b} + test {test_size if c < 0 else c} = "
            f"{a + b + max(c, 0)} rows wanted, but the data has only {n}{after}"
        )
    shuffled = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    if stratify:
        counts = stratified_counts(class_counts(shuffled["y"], len(classes)), [a, b, c], classes)
        return _cut_by_class(shuffled, counts)
    train = shuffled.iloc[:a]
    held = class_counts(train["y"], len(classes))
    if (held == 0).any():
        lacking = ", ".join(repr(classes[k]) for k in np.flatnonzero(held == 0))
        raise ValueError(
            f"the {a} training rows hold no row of class {lacking} (rows per "
            f"class: {dict(zip(classes, held.tolist()))}); use a larger train "
            "size, or a stratified split"
        )
    return Splits(train, shuffled.iloc[a : a + b], shuffled.iloc[a + b : a + b + c])


def stratified_counts(
    per_class: np.ndarray, sizes: Sequence[int], classes: Sequence[str] | None = None
) -> np.ndarray:
    """Rows of each class in each split: ``[S, K]`` int64 for ``per_class`` ``[K]`` rows
    of each class and ``sizes`` ``[S]`` (the splits in order; row s sums to sizes[s]).

    Split by split, from the rows still left (``left[k]``, ``R`` in all), class k's
    quota is ``size * left[k] / R``; each class first gets the floor of its quota, at
    least 1 (every non-empty split holds every class) and at most ``left[k]`` minus one
    for each later non-empty split; then rows are added to the class furthest below its
    quota (or taken from the one furthest above) until the split has its size, ties
    going to the lower class id. Deterministic, and within about one row of exact.
    """
    left = np.asarray(per_class, np.int64).copy()
    k = len(left)
    classes = tuple(classes) if classes is not None else tuple(str(i) for i in range(k))
    busy = [s for s in sizes if s > 0]
    for s in busy:
        if s < k:
            raise ValueError(
                f"a stratified split of {s} rows cannot hold one row of each of "
                f"the {k} classes; make every split at least {k} rows"
            )
    short = [(classes[j], int(left[j])) for j in range(k) if left[j] < len(busy)]
    if short:
        names = ", ".join(f"{name!r} has {rows}" for name, rows in short)
        raise ValueError(
            f"a stratified split puts at least one row of each class in each "
            f"of the {len(busy)} non-empty splits, but class {names} row(s); "
            "add rows of that class, or split without stratify"
        )
    out = np.zeros((len(sizes), k), np.int64)
    for i, size in enumerate(sizes):
        if size == 0:
            continue
        later = sum(1 for s in sizes[i + 1 :] if s > 0)
        quota = size * left / left.sum()
        low, high = np.ones(k, np.int64), left - later
        take = np.clip(np.floor(quota).astype(np.int64), low, high)
        while take.sum() < size:  # argmax/argmin take the first: ties to the lower id
            take[int(np.argmax(np.where(take < high, quota - take, -np.inf)))] += 1
        while take.sum() > size:
            take[int(np.argmin(np.where(take > low, quota - take, np.inf)))] -= 1
        out[i] = take
        left -= take
    return out


def _cut_by_class(shuffled: pd.DataFrame, counts: np.ndarray) -> Splits:
    """Splits from ``counts`` [3, K]: the first ``counts[0, k]`` rows of class k (in
    shuffled order) go to train, the next ``counts[1, k]`` to val, and so on; rows left
    over are dropped. Each split keeps the shuffled order."""
    y = shuffled["y"].to_numpy()
    rank = shuffled.groupby("y").cumcount().to_numpy()  # position within its class
    ends = np.cumsum(counts, axis=0)  # [3, K]: where each split stops, per class
    which = (rank[:, None] >= ends[:, y].T).sum(axis=1)  # 0 train, 1 val, 2 test, 3 unused
    train, val, test = (shuffled[which == s] for s in range(3))
    return Splits(train, val, test)


# --------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class Encoded:
    """Token ids right-padded with <|endoftext|>: ``ids`` [N, L] int32, ``lengths`` [N]
    (real tokens after truncation), ``labels`` [N] int32, ``truncated``: how many
    messages were cut to L."""

    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    truncated: int

    def __len__(self):
        return len(self.labels)


def token_lists(tokenizer, texts) -> list[list[int]]:
    """Token ids of each text. A text holding GPT-2's special token ``<|endoftext|>`` is
    refused (tiktoken's rule, as in the book): naming which text, in one line."""
    out = []
    for i, text in enumerate(texts):
        try:
            out.append(tokenizer.encode(text))
        except ValueError as err:
            if "special token" not in str(err):
                raise
            raise ValueError(
                f"text {i + 1} contains GPT-2's special token <|endoftext|>, "
                "which cannot be part of a text; remove it"
            ) from None
    return out


def encode(tokens: list[list[int]], labels, max_length: int) -> Encoded:
    ids = np.full((len(tokens), max_length), PAD_ID, np.int32)
    lengths = np.zeros(len(tokens), np.int32)
    for row, toks in enumerate(tokens):
        toks = toks[:max_length]
        ids[row, : len(toks)] = toks
        lengths[row] = len(toks)
    truncated = sum(len(t) > max_length for t in tokens)
    return Encoded(ids, lengths, np.asarray(labels, np.int32), truncated)


def encode_splits(
    splits: Splits,
    tokenizer,
    context_length: int,
    max_length: int | None = None,
    vocab_size: int | None = None,
) -> tuple[dict[str, Encoded], int]:
    """Encode every split (``text`` -> ids, ``y`` -> labels) to one length: ``max_length``
    or the longest training text, capped at the model's context. Returns
    ``({"train": ..., ...}, length)``."""
    tokens = {name: token_lists(tokenizer, df["text"]) for name, df in splits.items()}
    if max_length is None:
        max_length = max(len(t) for t in tokens["train"])
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    length = min(max_length, context_length)
    if vocab_size is not None:
        for name, df in splits.items():
            for row, toks in enumerate(tokens[name]):
                if toks and max(toks) >= vocab_size:
                    place = df["where"].iloc[row] if "where" in df else f"row {row + 1}"
                    raise ValueError(
                        f"{place} ({name} split) has token id {max(toks)}, but "
                        f"the model's vocabulary has only {vocab_size} ids: "
                        "tokenizer and model do not belong together"
                    )
    encoded = {
        name: encode(tokens[name], df["y"].to_numpy(), length) for name, df in splits.items()
    }
    return encoded, length


def epoch_order(
    n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True, drop_last: bool = True
) -> list[np.ndarray]:
    """Index arrays of the batches of one epoch; the order depends only on (seed, epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]
