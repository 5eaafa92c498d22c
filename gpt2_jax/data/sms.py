"""The SMS Spam Collection: fetch it, check it and read it into the standard frame.

The file is header-less ``label<TAB>message``, labels ``ham`` / ``spam``. By default it
is read the way the lab does (pandas, tab-separated, no header, default quoting: 5,574
lines give 5,572 rows, because one quote joins three lines), so the lab's numbers stay
exactly the same; every such join is reported in ``df.attrs["joined"]``. Files that are
not the lab's can be read with ``quoting="none"``: one message per line. See
``gpt2_jax.data.tables`` for the standard frame and what happens next.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import re
import zipfile
from pathlib import Path

import pandas as pd

# (data imports this module only inside read_table)
from gpt2_jax.data.cells import shown
from gpt2_jax.data.records import SMS_FILE_NAME, SMS_QUOTING, CsvRecordError, Problems, csv_records
from gpt2_jax.util.fetch import fetch
from gpt2_jax.util.files import write_bytes_atomic

SMS_URLS = (
    "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
    # mirror used by the book's code when UCI is down
    "https://f001.backblazeb2.com/file/LLMs-from-scratch/sms%2Bspam%2Bcollection.zip",
)
# SHA-256 of SMSSpamCollection as it is in the UCI zip (v.1, 5,574 lines)
SMS_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
SMS_LABELS = ("ham", "spam")  # the labels the file may hold; class_names() orders them the same


def fetch_sms_spam(
    data_dir: str | os.PathLike,
    *,
    offline: bool | None = None,
    urls: tuple[str, ...] = SMS_URLS,
    sha256: str | None = SMS_SHA256,
    **fetch_kwargs,
) -> Path:
    """Path of ``data_dir/sms_spam_collection/SMSSpamCollection``, downloading the zip
    (each URL in turn) and unzipping it first if needed. The unpacked file must have
    ``sha256``; a zip that does not hold it is deleted, so the next run fetches afresh."""
    folder = Path(data_dir) / "sms_spam_collection"
    target = folder / SMS_FILE_NAME
    if target.is_file():
        return target
    zip_path = fetch(urls, folder / "sms_spam_collection.zip", offline=offline, **fetch_kwargs)
    return _unpack(zip_path, target, sha256, downloaded=True)


def sms_from_zip(
    zip_path: str | os.PathLike, data_dir: str | os.PathLike, *, sha256: str | None = SMS_SHA256
) -> Path:
    """The ``SMSSpamCollection`` of a zip given by hand (``--data-file x.zip``): unpacked,
    checked, into ``data_dir/sms_spam_collection/`` (where a download would put it), unless
    that file is there already; its path. The zip itself is never deleted."""
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise FileNotFoundError(f"data file not found: {zip_path}")
    target = Path(data_dir) / "sms_spam_collection" / SMS_FILE_NAME
    if target.is_file():
        return target
    return _unpack(zip_path, target, sha256, downloaded=False)


def _unpack(zip_path: Path, target: Path, sha256: str | None, *, downloaded: bool) -> Path:
    """Write the zip's ``SMSSpamCollection`` (with ``sha256``) at ``target``. A bad zip that
    was ``downloaded`` is deleted, so the next run fetches afresh; one given by hand is kept."""
    then = (
        "deleted it, run again to download it afresh"
        if downloaded
        else f"give the SMS Spam Collection zip or its unzipped {SMS_FILE_NAME}"
    )
    try:
        with zipfile.ZipFile(zip_path) as archive:
            payload = archive.read(SMS_FILE_NAME)
    except (zipfile.BadZipFile, KeyError) as err:
        if downloaded:
            zip_path.unlink()
        raise ValueError(f"{zip_path}: not the SMS Spam Collection zip ({err}); {then}") from err
    got = hashlib.sha256(payload).hexdigest()
    if sha256 is not None and got != sha256:
        if downloaded:
            zip_path.unlink()
        raise ValueError(
            f"{zip_path}: its {SMS_FILE_NAME} has SHA-256 {got}, expected {sha256} "
            f"(a different or damaged copy); {then}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, payload)
    return target


def check_lines(path: Path, raw: bytes, *, quoting: str = "pandas") -> None:
    """Each line must be UTF-8 ``label<TAB>message`` with a known label and a non-empty
    message; raise one ``ValueError`` naming the file and the problem line (one line of
    text), or the first five problem lines.

    Lines that are empty or only spaces are skipped (pandas skips them too). With
    ``quoting="none"`` a line must hold exactly one tab; with the lab's quoting a second
    tab may sit inside a quoted message, so ``_check_records`` counts fields instead."""
    problems = Problems(path)
    for number, line in enumerate(raw.splitlines(), start=1):
        problem = _line_problem(number, line, quoting)
        if problem:
            problems.add(problem)
        if problems.full:
            problems.raise_if_any(more=True)
    problems.raise_if_any()


def _line_problem(number: int, line: bytes, quoting: str) -> str | None:
    """What is wrong with physical line ``number`` (bytes, no line ending), or None."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        return (
            f"line {number}, byte {err.start + 1}: {line[err.start]:#04x} is not UTF-8 "
            "(save the file as UTF-8)"
        )
    if not text.strip(" "):
        return None  # blank: skipped by the reader
    label, tab, message = text.partition("\t")
    if not tab:
        return (
            f"line {number}: no tab; expected 'ham' or 'spam', a tab, then the message "
            f"(got {text[:40]!r})"
        )
    if label not in SMS_LABELS:
        return f"line {number}: label {shown(label)}; expected one of {SMS_LABELS}"
    if not message.strip():
        return f"line {number}: empty message after the {shown(label)} label"
    if quoting == "none" and "\t" in message:
        return (
            f"line {number}: {message.count(chr(9)) + 2} tab-separated fields, expected 2 "
            "(label, message); remove the tab from the message"
        )
    return None


def read_sms_spam(path: str | os.PathLike, quoting: str = "pandas") -> pd.DataFrame:
    """The standard frame of the file: ``text``, ``label`` ("ham" / "spam") and ``where``
    ("SMSSpamCollection line 17": the line the message starts on), one row per message.

    ``quoting`` (one of ``SMS_QUOTING``):

    * ``"pandas"`` (the lab's, the default): parsed as the lab does, pandas with default
      quoting, so a message that starts with ``"`` runs on, across lines, up to the next
      ``"`` (the real file: 5,574 lines give 5,572 messages). Every message that took
      more than one line is listed in ``df.attrs["joined"]``:
      ``[{"where": "SMSSpamCollection line 5082", "lines": 3}, ...]`` (empty if none);
    * ``"none"``: one message per line, quotes are ordinary characters
      (``df.attrs["joined"] == []``).

    ``df.attrs["quoting"]`` says which was used. A leading UTF-8 byte-order mark is
    dropped. Lines are checked first (see ``check_lines``); every problem is a
    ``ValueError`` naming the file and line."""
    if quoting not in SMS_QUOTING:
        raise ValueError(
            f"SMS quoting {quoting!r} is not one of {SMS_QUOTING}: 'pandas' is "
            "the lab's (a quote joins lines), 'none' reads one message per line"
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SMS Spam Collection file not found: {path}")
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    check_lines(path, raw, quoting=quoting)
    if not any(line.strip(b" ") for line in raw.splitlines()):
        raise ValueError(
            f"{path}: no messages; expected lines of 'ham' or 'spam', a tab, then the message"
        )
    if quoting == "pandas":
        df, lines = _read_quoted(path, raw)
    else:
        df = _read_plain(path, raw)
        lines = [1] * len(df)
    _check_messages(path, df)
    df.attrs["quoting"] = quoting
    df.attrs["joined"] = [
        {"where": where, "lines": n} for where, n in zip(df["where"], lines) if n > 1
    ]
    return df


def _check_messages(path: Path, df: pd.DataFrame) -> None:
    """No empty message (possible through quoting even when every line has text), and
    both labels present."""
    empty = df["text"].str.strip() == ""
    if empty.any():
        where = df["where"][empty].iloc[0]
        raise ValueError(
            f"{path}: {where}: empty message (as pandas reads the file: a quote "
            "joins lines up to the next quote); remove the stray quote"
        )
    present = sorted(set(df["label"]))
    if len(present) < len(SMS_LABELS):
        raise ValueError(
            f"{path}: every message is labelled {present}; a classifier needs "
            f"examples of each of {SMS_LABELS}"
        )


def _read_plain(path: Path, raw: bytes) -> pd.DataFrame:
    """``quoting="none"``: every non-blank line is ``label<TAB>message`` as it stands
    (lines already checked by ``check_lines``)."""
    rows, places = [], []
    for number, line in enumerate(raw.splitlines(), start=1):
        text = line.decode("utf-8")
        if text.strip(" "):
            label, _, message = text.partition("\t")
            rows.append((message, label))
            places.append(f"{path.name} line {number}")
    df = pd.DataFrame(rows, columns=["text", "label"], dtype=object)
    df["where"] = places
    return df


def _read_quoted(path: Path, raw: bytes) -> tuple[pd.DataFrame, list[int]]:
    """``quoting="pandas"``: the frame as the lab reads it, and how many physical lines
    each message took. The records are checked first, as Python's csv module splits
    them (same dialect), since pandas would take a line with a third field as an index
    column (first line) or stop with a line number of its own (later lines)."""
    text = raw.decode("utf-8")
    records = _sms_records(text)
    _check_records(path, text, records)
    try:
        df = pd.read_csv(
            io.BytesIO(raw),
            sep="\t",
            header=None,
            names=["label", "text"],
            dtype=str,
            keep_default_na=False,
        )
    except pd.errors.ParserError as err:
        reason = " ".join(str(err).split())
        raise ValueError(
            f"{path}: pandas cannot read it with the lab's quoting ({reason}); "
            "look for a stray quote, or read it with --quoting none"
        ) from None
    df = df[["text", "label"]]
    where, lines = _message_places(path, records, df)
    df["where"] = where
    return df, lines


def _sms_records(text: str) -> list[tuple[int, int, list]]:
    """``csv_records`` of the SMS dialect (tab, default quoting, lenient) as pandas sees
    them: a line of spaces only is no record. Empty if the csv module refuses the file."""
    try:
        records = csv_records(text, delimiter="\t", strict=False)
    except CsvRecordError:
        return []
    return [r for r in records if not (len(r[2]) == 1 and not r[2][0].strip(" "))]


def _check_records(path: Path, text: str, records: list[tuple[int, int, list]]) -> None:
    """Every record is label + message (a tab only inside a quoted message), and no
    quote runs on to the end of the file."""
    problems = Problems(path)
    for start, end, row in records:
        if len(row) != 2:
            problems.add(_fields_problem(start, end, len(row)))
        if problems.full:
            problems.raise_if_any(more=True)
    problems.raise_if_any()
    quote_line = _unclosed_quote(text, records)
    if quote_line is not None:
        raise ValueError(
            f"{path} line {quote_line}: the quote that opens this message is never "
            "closed, so it would swallow every line after it; remove the quote, "
            "or read the file with --quoting none"
        )


def _fields_problem(start: int, end: int, fields: int) -> str:
    """What is wrong with a record of lines ``start``-``end`` that has ``fields`` != 2."""
    if end > start:
        return (
            f"line {start}: the quote at the start of this message joins lines "
            f"{start}-{end} into one record of {fields} tab-separated fields (expected "
            "2: label, message); close the quote where the message ends, or read the "
            "file with --quoting none"
        )
    return (
        f"line {start}: {fields} tab-separated fields, expected 2 (label, message); put "
        'a message that holds a tab in quotes ("..."), or remove the tab'
    )


def _unclosed_quote(text: str, records: list[tuple[int, int, list]]) -> int | None:
    """The start line of the last record if a quote in it is never closed (only the last
    record can hold one: it then runs to the end of the file), else None."""
    if not records:
        return None
    start = records[-1][0]
    # StringIO(newline="") splits lines where the csv module counts them (\n, \r, \r\n)
    tail = "".join(io.StringIO(text, newline="").readlines()[start - 1 :])
    try:
        csv_records(tail, delimiter="\t", strict=True)
    except CsvRecordError as err:
        return start if err.reason == "unexpected end of data" else None
    return None


def _message_places(
    path: Path, records: list[tuple[int, int, list]], df: pd.DataFrame
) -> tuple[list[str], list[int]]:
    """``where`` of each row of ``df`` (the file as pandas read it): "NAME line N", and
    the number of physical lines each row took.

    Python's csv module with the same dialect (tab, default quoting) splits the file the
    same way and also tells the lines each record spans. Should the two ever disagree
    (a file pandas reads differently), fall back to the message number, which is always
    true, rather than to line numbers that might be wrong, and count the line breaks
    inside each message instead."""
    pairs = list(zip(df["label"], df["text"]))
    if len(records) == len(df) and all(
        tuple(row) == pair for (_, _, row), pair in zip(records, pairs)
    ):
        return (
            [f"{path.name} line {start}" for start, _, _ in records],
            [end - start + 1 for start, end, _ in records],
        )
    return (
        [f"{path.name} message {i + 1}" for i in range(len(df))],
        [1 + _line_breaks(label) + _line_breaks(text) for label, text in pairs],
    )


def _line_breaks(text: str) -> int:
    """Line breaks in ``text`` (\\r\\n counts once)."""
    return len(re.findall(r"\r\n|\r|\n", text))
