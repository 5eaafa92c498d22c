"""The SMS Spam Collection: fetch it, check it and read it into the standard frame.

The file is header-less ``label<TAB>message``, labels ``ham`` / ``spam``. It is read
the way the lab does (pandas, tab-separated, no header, default quoting: 5,574 lines
give 5,572 rows, because a few quotes join lines), so the lab's numbers stay exactly
the same. See ``gpt2_jax.data`` for the standard frame and what happens next.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import pandas as pd

from .data import SMS_FILE_NAME, CsvRecordError, csv_records  # (data imports this module only inside read_table)
from .download import fetch

SMS_URLS = (
    "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
    # mirror used by the book's code when UCI is down
    "https://f001.backblazeb2.com/file/LLMs-from-scratch/sms%2Bspam%2Bcollection.zip",
)
# SHA-256 of SMSSpamCollection as it is in the UCI zip (v.1, 5,574 lines)
SMS_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
SMS_LABELS = ("ham", "spam")  # the labels the file may hold; class_names() orders them the same


def fetch_sms_spam(data_dir: str | os.PathLike, *, offline: bool | None = None,
                   urls: tuple[str, ...] = SMS_URLS, sha256: str | None = SMS_SHA256,
                   **fetch_kwargs) -> Path:
    """Path of ``data_dir/sms_spam_collection/SMSSpamCollection``, downloading the zip
    (each URL in turn) and unzipping it first if needed. The unpacked file must have
    ``sha256``; a zip that does not hold it is deleted, so the next run fetches afresh."""
    folder = Path(data_dir) / "sms_spam_collection"
    target = folder / SMS_FILE_NAME
    if target.is_file():
        return target
    zip_path = fetch(urls, folder / "sms_spam_collection.zip", offline=offline, **fetch_kwargs)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            payload = archive.read(SMS_FILE_NAME)
    except (zipfile.BadZipFile, KeyError) as err:
        zip_path.unlink()
        raise ValueError(f"{zip_path}: not the SMS Spam Collection zip ({err}); deleted it, "
                         "run again to download it afresh") from err
    got = hashlib.sha256(payload).hexdigest()
    if sha256 is not None and got != sha256:
        zip_path.unlink()
        raise ValueError(f"{zip_path}: its {SMS_FILE_NAME} has SHA-256 {got}, expected {sha256} "
                         "(a different or damaged copy); deleted it, run again to download "
                         "it afresh")
    part = target.with_name(target.name + ".part")
    part.write_bytes(payload)
    os.replace(part, target)
    return target


def check_lines(path: Path, raw: bytes, max_problems: int = 5) -> None:
    """Each line must be UTF-8 ``label<TAB>message`` with a known label and a non-empty
    message; raise one ``ValueError`` naming the file and the first problem lines."""
    problems = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.append(f"line {number}, byte {err.start + 1}: {line[err.start]:#04x} is not "
                            "UTF-8 (save the file as UTF-8)")
            continue
        if not text.strip():
            continue  # blank lines are skipped by the reader
        label, tab, message = text.partition("\t")
        if not tab:
            problems.append(f"line {number}: no tab; expected 'ham' or 'spam', a tab, then the "
                            f"message (got {text[:40]!r})")
        elif label not in SMS_LABELS:
            problems.append(f"line {number}: label {label!r}; expected one of {SMS_LABELS}")
        elif not message.strip():
            problems.append(f"line {number}: empty message after the {label!r} label")
        if len(problems) == max_problems:
            problems.append("(stopped after the first ones)")
            break
    if problems:
        raise ValueError(f"{path}: not in the SMS Spam Collection format:\n  "
                         + "\n  ".join(problems))


def read_sms_spam(path: str | os.PathLike) -> pd.DataFrame:
    """The standard frame of the file: ``text``, ``label`` ("ham" / "spam") and ``where``
    ("SMSSpamCollection line 17": the line the message starts on), one row per message.

    Lines are checked first (see ``check_lines``), then parsed as the lab does."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SMS Spam Collection file not found: {path}")
    raw = path.read_bytes()
    check_lines(path, raw)
    df = pd.read_csv(io.BytesIO(raw), sep="\t", header=None, names=["label", "text"], dtype=str,
                     keep_default_na=False)
    df = df[["text", "label"]]
    df["where"] = _message_places(path, raw, df)
    empty = df["text"].str.strip() == ""
    if empty.any():  # possible through quoting even when every line has text
        where = df["where"][empty].iloc[0]
        raise ValueError(f"{path}: {where}: empty message (as pandas reads the file: a quote "
                         "joins lines up to the next quote); remove the stray quote")
    present = sorted(set(df["label"]))
    if len(present) < len(SMS_LABELS):
        raise ValueError(f"{path}: every message is labelled {present}; a classifier needs "
                         f"examples of each of {SMS_LABELS}")
    return df


def _message_places(path: Path, raw: bytes, df: pd.DataFrame) -> list[str]:
    """``where`` of each row of ``df`` (the file as pandas read it): "NAME line N".

    Python's csv module with the same dialect (tab, default quoting) splits the file the
    same way and also tells the line each record starts on. Should the two ever disagree
    (a file pandas reads differently), fall back to the message number, which is always
    true, rather than to line numbers that might be wrong."""
    try:
        records = csv_records(raw.decode("utf-8"), delimiter="\t", strict=False)
    except CsvRecordError:
        records = []
    pairs = list(zip(df["label"], df["text"]))
    if len(records) == len(df) and all(tuple(row) == pair
                                       for (_, _, row), pair in zip(records, pairs)):
        return [f"{path.name} line {start}" for start, _, _ in records]
    return [f"{path.name} message {i + 1}" for i in range(len(df))]
