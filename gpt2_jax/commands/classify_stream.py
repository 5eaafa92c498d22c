"""``classify --input FILE``: files larger than memory, read, classified and written a
chunk of texts at a time, with progress, and resumed after a kill.

Two passes over the file. The first checks every row (as ``data.tables.read_table``
does, plus ``data.texts.text_problem``) and counts them, keeping nothing: a bad row
stops the command before anything is classified, as when the file was read whole. The
second reads ``--chunk-size`` texts at a time, classifies them and writes their
predictions at once, in the file's order. CSV, TSV and JSON Lines are streamed, Parquet
a row group at a time (``data.parquet``); SMS files are read whole (their size checked
first, see ``data.budget``).

With ``--output OUT`` the rows go to ``OUT.partial``; ``OUT.partial.json`` records what
they belong to (the input's path, size and SHA-256, ``--format``, ``--text-column``,
the run folder and its ``classifier.json``'s SHA-256, ``--decision-threshold`` and
``--dtype``) and how many rows and bytes are
complete, updated after each chunk is on disk. Rerunning the same command continues
from there (bytes past the record, half a chunk, are dropped); a record that does not
match is refused, so two inputs are never mixed. At the end the file is renamed to OUT.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from gpt2_jax.commands.classify_output import (
    prediction_table,
    print_header,
    print_rows,
    table_text,
    terminal_columns,
)
from gpt2_jax.commands.common import InputError, one_line
from gpt2_jax.data.texts import text_problem
from gpt2_jax.training.progress import Progress
from gpt2_jax.util.files import file_sha256, write_text_atomic

CHUNK_TEXTS = 4096  # texts read, classified and written at a time (--chunk-size)
QUIET_SECONDS = 5.0  # progress lines only for a pass that has run this long
STAMP_WORDS = {  # what differs, in the user's words
    "input": "--input file",
    "bytes": "input size",
    "sha256": "input content",
    "format": "--format",
    "text_column": "--text-column",
    "run": "--run folder",
    "classifier": "classifier (classifier.json)",
    "threshold": "--decision-threshold",
    "dtype": "--dtype",
}
STAMP_BEFORE = {"dtype": "float32"}  # what records written before a key was added mean


def input_texts(args) -> Iterator[tuple[str, str]]:
    """``(place, text)`` of every row of ``--input``; its problems as an InputError."""
    from gpt2_jax.data.tables import iter_rows  # pandas: not for texts given otherwise

    try:
        yield from iter_rows(args.input, fmt=args.format, text_column=args.text_column)
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as err:
        message = one_line(err)  # the readers' messages mostly name the file already
        raise InputError(
            message if str(args.input) in message else f"--input {args.input}: {message}"
        ) from None


def count_texts(args, special_tokens: tuple[str, ...]) -> int:
    """The first pass: every row read and checked, nothing kept; how many there are."""
    count = 0
    for place, text in input_texts(args):
        problem = text_problem(text, special_tokens)
        if problem is not None:
            raise InputError(f"{args.input} {place}, column {args.text_column!r} {problem}")
        count += 1
    return count


def chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def stamp(args) -> dict:
    """What a partial output belongs to (see the module docstring)."""
    from gpt2_jax.data.tables import guess_format

    path = Path(args.input)
    return {
        "input": str(path.resolve()),
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        "format": guess_format(path) if args.format == "auto" else args.format,
        "text_column": args.text_column,
        "run": str(Path(args.run).resolve()),
        "classifier": file_sha256(Path(args.run) / "classifier.json"),
        "threshold": getattr(args, "decision_threshold", None),
        "dtype": getattr(args, "dtype", "float32"),
    }


class Partial:
    """``OUT.partial`` and its record ``OUT.partial.json``: rows appended a chunk at a
    time, each chunk on disk before the record counts it."""

    def __init__(self, out: Path, stamp: dict):
        self.out, self.stamp = out, stamp
        self.path = out.with_name(out.name + ".partial")
        self.record = out.with_name(out.name + ".partial.json")
        self.rows = self.bytes = self.truncated = 0
        if self.path.exists() or self.record.exists():
            self._resume()
            self.file = open(self.path, "r+b")
            self.file.truncate(self.bytes)
            self.file.seek(self.bytes)
        else:
            self.file = open(self.path, "w+b")
            self._save()

    def _resume(self) -> None:
        start_over = f"delete {self.path} and {self.record.name} to start over"
        try:
            saved = json.loads(self.record.read_text(encoding="utf-8"))
            old = dict(saved["stamp"])
            rows, size, truncated = saved["rows"], saved["bytes"], saved["truncated"]
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(
                f"--output {self.out}: {self.path} has no readable record of what it "
                f"holds ({self.record}); {start_over}"
            ) from None
        differ = [
            STAMP_WORDS[k] for k in self.stamp if old.get(k, STAMP_BEFORE.get(k)) != self.stamp[k]
        ]
        if differ:
            dtype = old.get("dtype", STAMP_BEFORE.get("dtype"))
            made = f" (it was made with --dtype {dtype})" if dtype != self.stamp["dtype"] else ""
            raise InputError(
                f"--output {self.out}: {self.path} holds predictions for another "
                f"{', '.join(differ)}{made}; give the same --input, --run, --format, "
                f"--text-column, --decision-threshold and --dtype to continue it, or {start_over}"
            )
        if not self.path.is_file():
            what = "is not a file" if self.path.exists() else "is missing"
            raise InputError(
                f"--output {self.out}: {self.path} {what}, though {self.record.name} "
                f"says it holds {rows} rows; delete {self.record.name} to start over"
            )
        if self.path.stat().st_size < size:
            raise InputError(
                f"--output {self.out}: {self.path} is shorter than its record; {start_over}"
            )
        self.rows, self.bytes, self.truncated = rows, size, truncated

    def _save(self) -> None:
        record = {"stamp": self.stamp, "rows": self.rows, "bytes": self.bytes}
        write_text_atomic(self.record, json.dumps({**record, "truncated": self.truncated}))

    def append(self, text: str, rows: int, truncated: int) -> None:
        data = text.encode("utf-8")
        self.file.write(data)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.rows, self.bytes = self.rows + rows, self.bytes + len(data)
        self.truncated += truncated
        self._save()

    def finish(self) -> None:
        self.file.close()
        os.replace(self.path, self.out)
        self.record.unlink()


def classify_file(classifier, args) -> tuple[int, int]:
    """Classify ``--input`` a chunk at a time, to ``--output`` or stdout; (texts, of
    them truncated). InputError for a bad row, before any work."""
    special = tuple(getattr(classifier.tokenizer, "special_tokens_set", ()))
    total = count_texts(args, special)
    partial = Partial(Path(args.output), stamp(args)) if args.output else None
    done = partial.rows if partial else 0
    truncated = partial.truncated if partial else 0
    if partial is None:
        print_header(classifier.labels)
    elif done:
        print(f"resuming {partial.path}: {done} of {total} predictions are there", file=sys.stderr)
    progress = Progress(
        total - done,
        "classify",
        unit="text",
        units="texts",
        log=lambda line: print(line, file=sys.stderr),
        quiet_below=QUIET_SECONDS,
    )
    texts = (text for _, text in itertools.islice(input_texts(args), done, None))
    columns = terminal_columns()
    try:
        for chunk in chunks(texts, args.chunk_size):
            pred = classifier.predict(chunk, batch_size=args.batch_size)
            truncated += int(pred.truncated.sum())
            if partial is None:
                print_rows(chunk, pred, columns)
                sys.stdout.flush()
            else:
                table = prediction_table(chunk, pred, classifier.labels)
                text = table_text(table, partial.out.suffix, header=partial.rows == 0)
                partial.append(text, len(chunk), int(pred.truncated.sum()))
            progress.done(len(chunk))
    finally:
        progress.close()
    if partial is not None:
        partial.finish()
        print(f"wrote {total} predictions to {args.output}", file=sys.stderr)
    return total, truncated
