"""Reading text files record by record: problems collected per file, UTF-8 checked,
CSV records with the lines they span. Shared by the table readers and the SMS reader."""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

SMS_FILE_NAME = "SMSSpamCollection"  # the one extension-less name ``fmt="auto"`` knows
# how the "sms" format treats quotes (gpt2_jax.data.sms.read_sms_spam): "pandas" = the lab's
# (a message starting with " runs on to the next "), "none" = one message per line
SMS_QUOTING = ("pandas", "none")
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


def decode(path: Path, raw: bytes) -> str:
    """The file as text (UTF-8, a leading byte-order mark dropped); a byte that is not
    UTF-8 is reported with its line and its byte position in that line (the mark not
    counted: editors do not show it)."""
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line, column = byte_place(raw, err.start)
        raise ValueError(
            f"{path} line {line}, byte {column}: {raw[err.start]:#04x} is not "
            "UTF-8 (save the file as UTF-8)"
        ) from None


def byte_place(raw: bytes, offset: int) -> tuple[int, int]:
    """(line, byte in that line) of ``raw[offset]``, both 1-based."""
    line = raw.count(b"\n", 0, offset) + 1
    return line, offset - (raw.rfind(b"\n", 0, offset) + 1) + 1


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
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=strict)
    limit = csv.field_size_limit()
    # A field cannot be longer than the file; the default limit (128 KiB) would turn an
    # unclosed quote into a "field larger than field limit" error far from its start.
    csv.field_size_limit(max(limit, len(text) + 1))
    records, done = [], 0  # done: lines consumed by the records before
    try:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                raise CsvRecordError(done + 1, reader.line_num, str(err)) from None
            if row:  # a blank line is an empty record
                records.append((done + 1, reader.line_num, row))
            done = reader.line_num
    finally:
        csv.field_size_limit(limit)
    return records
