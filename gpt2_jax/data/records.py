"""Reading text files record by record: problems collected per file, UTF-8 checked,
CSV records with the lines they span. Shared by the table readers and the SMS reader."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

SMS_FILE_NAME = "SMSSpamCollection"  # the one extension-less name ``fmt="auto"`` knows
# how the "sms" format treats quotes (gpt2_jax.data.sms.read_sms_spam): "pandas" = the lab's
# (a message starting with " runs on to the next "), "none" = one message per line
SMS_QUOTING = ("pandas", "none")
# the table formats (gpt2_jax.data.tables reads them): named here, without pandas, for
# the command lines' flags
FORMATS = ("sms", "csv", "tsv", "jsonl", "parquet")
MAX_PROBLEMS = 5  # a bad file reports this many problems at once, not thousands


class Problems:
    """Collects "line N: what is wrong" for one file and raises them as one ValueError."""

    def __init__(self, path: Path, advice: str = ""):
        self.path, self.advice = path, advice
        self.items: list[str] = []

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_PROBLEMS

    def add(self, problem: str) -> None:
        if not self.full:
            self.items.append(problem)

    def raise_if_any(self, more: bool = False) -> None:
        """``more``: reading stopped at the limit, so there may be further problems."""
        if not self.items:
            return
        advice = f" ({self.advice})" if self.advice else ""
        if len(self.items) == 1 and not more:
            raise ValueError(f"{self.path} {self.items[0]}{advice}")
        tail = ["(stopped after the first ones)"] if more or self.full else []
        raise ValueError(
            f"{self.path}: {len(self.items)} problems{advice}:\n  " + "\n  ".join(self.items + tail)
        )


class CsvRecordError(ValueError):
    """The csv module refused a record: ``start`` = the line the record starts on,
    ``line`` = where the parser gave up, ``reason`` = its message."""

    def __init__(self, start: int, line: int, reason: str):
        super().__init__(f"line {start}: {reason}")
        self.start, self.line, self.reason = start, line, reason


def csv_records(text: str, delimiter: str, strict: bool = True) -> list[tuple[int, int, list]]:
    """``(first_line, last_line, fields)`` of every non-blank record of ``text`` (1-based
    lines; a quoted field may hold newlines, so one record may span several lines).

    Standard quoting (RFC 4180): ``"`` opens a field that may hold the delimiter,
    newlines and doubled quotes ``""``. ``strict`` makes a quote that is never closed
    (or text right after a closing quote) a ``CsvRecordError`` instead of being taken as
    data; that is what a broken quote looks like.
    """
    lines = io.StringIO(text, newline="")
    return list(iter_csv_records(lines, delimiter, strict, longest=len(text)))


def iter_csv_records(
    lines: Iterable[str], delimiter: str, strict: bool = True, *, longest: int
) -> Iterator[tuple[int, int, list]]:
    """``csv_records`` one record at a time, from ``lines`` (as a file opened with
    ``newline=""`` gives them); ``longest``: the longest a field can be (the file's
    length)."""
    reader = csv.reader(lines, delimiter=delimiter, strict=strict)
    limit = csv.field_size_limit()
    # A field cannot be longer than the file; the default limit (128 KiB) would turn an
    # unclosed quote into a "field larger than field limit" error far from its start.
    csv.field_size_limit(max(limit, longest + 1))
    done = 0  # done: lines consumed by the records before
    try:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                raise CsvRecordError(done + 1, reader.line_num, str(err)) from None
            if row:  # a blank line is an empty record
                yield done + 1, reader.line_num, row
            done = reader.line_num
    finally:
        csv.field_size_limit(limit)


def text_lines(path: Path, newline: str) -> Iterator[str]:
    """The file's lines, read as UTF-8 a block at a time (a leading byte-order mark
    dropped); ``newline`` as for ``open`` ("" = any line end, kept; "\n" = "\n" only).
    A byte that is not UTF-8 is reported with its line and its byte position in
    that line (the mark not counted: editors do not show it)."""
    with open(path, "rb") as raw, io.TextIOWrapper(raw, "utf-8-sig", newline=newline) as f:
        try:
            yield from f
        except UnicodeDecodeError:
            raise _not_utf8(path) from None


def _not_utf8(path: Path) -> ValueError:
    """The error for the first byte of ``path`` that is not UTF-8, found line
    by line."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if number == 1:
                line = line.removeprefix(codecs.BOM_UTF8)
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return ValueError(
                    f"{path} line {number}, byte {err.start + 1}: {line[err.start]:#04x} "
                    "is not UTF-8 (save the file as UTF-8)"
                )
    return ValueError(f"{path}: not UTF-8 (save the file as UTF-8)")


def require_columns(
    path: Path, present: Sequence[str], columns: tuple[str, ...], place: str = ""
) -> None:
    """Error naming every wanted column that is not in ``present`` and the flag to use."""
    label_flag = "--label-column" if len(columns) <= 2 else "--label-columns"
    flags = ("--text-column",) + (label_flag,) * (len(columns) - 1)
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
