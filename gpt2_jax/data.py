"""The SMS Spam Collection: fetch, read, split, encode, batch.

Reads the file the way the lab does (pandas, tab-separated, no header, default
quoting: 5,572 rows), shuffles with ``df.sample(frac=1, random_state=seed)`` and
cuts consecutive train / validation / test slices from the shuffled frame.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .download import fetch
from .tokenizer import END_OF_TEXT_ID

SMS_URLS = (
    "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
    # mirror used by the book's code when UCI is down
    "https://f001.backblazeb2.com/file/LLMs-from-scratch/sms%2Bspam%2Bcollection.zip",
)
SMS_FILE_NAME = "SMSSpamCollection"
# SHA-256 of SMSSpamCollection as it is in the UCI zip (v.1, 5,574 lines)
SMS_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
LABELS = ("ham", "spam")  # index = class id
PAD_ID = END_OF_TEXT_ID


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
        elif label not in LABELS:
            problems.append(f"line {number}: label {label!r}; expected one of {LABELS}")
        elif not message.strip():
            problems.append(f"line {number}: empty message after the {label!r} label")
        if len(problems) == max_problems:
            problems.append("(stopped after the first ones)")
            break
    if problems:
        raise ValueError(f"{path}: not in the SMS Spam Collection format:\n  "
                         + "\n  ".join(problems))


def read_sms_spam(path: str | os.PathLike) -> pd.DataFrame:
    """``Label`` (str), ``Text`` (str) and ``label`` (0 = ham, 1 = spam) per message.

    Lines are checked first (see ``check_lines``), then parsed as the lab does."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SMS Spam Collection file not found: {path}")
    raw = path.read_bytes()
    check_lines(path, raw)
    df = pd.read_csv(io.BytesIO(raw), sep="\t", header=None, names=["Label", "Text"], dtype=str,
                     keep_default_na=False)
    empty = df["Text"].str.strip() == ""
    if empty.any():  # possible through quoting even when every line has text
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise ValueError(f"{path}: message {i + 1} (as pandas reads it, quotes joining lines) "
                         "is empty")
    df["label"] = df["Label"].map({name: k for k, name in enumerate(LABELS)}).astype(np.int32)
    present = set(df["label"].tolist())
    if len(present) < len(LABELS):
        only = [LABELS[k] for k in sorted(present)]
        raise ValueError(f"{path}: every message is labelled {only}; a classifier needs "
                         f"examples of each of {LABELS}")
    return df


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    def items(self):
        return (("train", self.train), ("val", self.val), ("test", self.test))


def balance_classes(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Undersample ham to the number of spam messages (the book's balanced set)."""
    spam = df[df["label"] == 1]
    ham = df[df["label"] == 0].sample(len(spam), random_state=seed)
    return pd.concat([ham, spam]).reset_index(drop=True)


def split(df: pd.DataFrame, train_size: int, val_size: int, test_size: int | None,
          seed: int = 123, balance: bool = False) -> Splits:
    """Shuffle once with ``seed`` and cut consecutive slices. ``test_size=None`` takes
    every row after validation."""
    if balance:
        df = balance_classes(df, seed)
    shuffled = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    n = len(shuffled)
    wanted = train_size + val_size + (test_size or 0)
    if train_size <= 0 or val_size < 0 or (test_size is not None and test_size < 0):
        raise ValueError(f"split sizes must be positive: train {train_size}, val {val_size}, "
                         f"test {test_size}")
    if wanted > n:
        raise ValueError(f"train {train_size} + val {val_size} + test {test_size} = {wanted} "
                         f"rows wanted, but the data has only {n}")
    a, b = train_size, train_size + val_size
    c = n if test_size is None else b + test_size
    train = shuffled.iloc[:a]
    counts = np.bincount(train["label"], minlength=len(LABELS))
    if (counts == 0).any():
        raise ValueError(f"the {train_size} training messages hold no "
                         f"{LABELS[int(np.argmin(counts))]!r} message (counts {counts.tolist()}); "
                         "use a larger train size")
    return Splits(train, shuffled.iloc[a:b], shuffled.iloc[b:c])


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
    return [tokenizer.encode(text) for text in texts]


def encode(tokens: list[list[int]], labels, max_length: int) -> Encoded:
    ids = np.full((len(tokens), max_length), PAD_ID, np.int32)
    lengths = np.zeros(len(tokens), np.int32)
    for row, toks in enumerate(tokens):
        toks = toks[:max_length]
        ids[row, : len(toks)] = toks
        lengths[row] = len(toks)
    truncated = sum(len(t) > max_length for t in tokens)
    return Encoded(ids, lengths, np.asarray(labels, np.int32), truncated)


def encode_splits(splits: Splits, tokenizer, context_length: int,
                  max_length: int | None = None,
                  vocab_size: int | None = None) -> tuple[dict[str, Encoded], int]:
    """Encode every split to one length: ``max_length`` or the longest training message,
    capped at the model's context. Returns ``({"train": ..., ...}, length)``."""
    tokens = {name: token_lists(tokenizer, df["Text"]) for name, df in splits.items()}
    if max_length is None:
        max_length = max(len(t) for t in tokens["train"])
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    length = min(max_length, context_length)
    if vocab_size is not None:
        for name, lists in tokens.items():
            for row, toks in enumerate(lists):
                if toks and max(toks) >= vocab_size:
                    raise ValueError(f"{name} message {row + 1} has token id {max(toks)}, but the "
                                     f"model's vocabulary has only {vocab_size} ids: tokenizer "
                                     "and model do not belong together")
    encoded = {name: encode(tokens[name], df["label"].to_numpy(), length)
               for name, df in splits.items()}
    return encoded, length


def epoch_order(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                drop_last: bool = True) -> list[np.ndarray]:
    """Index arrays of the batches of one epoch; the order depends only on (seed, epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]
