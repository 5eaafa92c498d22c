"""Classify texts with a classifier trained by ``experiments.spam`` or ``experiments.finetune``.

    python -m experiments.classify --run runs/spam-124M-... "WINNER!! Claim your prize now"
    cat messages.txt | python -m experiments.classify --run DIR     # one text per line
    python -m experiments.classify --run DIR --input inbox.csv --output predictions.jsonl

Everything about the classifier (label names, pooling, max length, tokenizer, model)
is read from the run folder; no training flag is needed. Each text gets the label
with the highest probability (argmax over the classes). Texts longer than the
classifier's max_length tokens are cut as in training (their first max_length
tokens, or the part --truncate chose); stderr says how many were. Texts must be
UTF-8 (arguments, stdin, --input); a byte that is not, or an empty text, stops with
where it is (TEXT argument N, stdin line N, file line N). Stdin lines may end in \\n or \\r\\n; blank ones are skipped.

Output without --output: a header line, then one line per text,
tab-separated: label, one probability per class, the text (tabs and newlines in it
shown as \\t and \\n). On a terminal the text is cut with "..." to fit the line
(its width from COLUMNS or the terminal); piped or redirected, it is whole. With
--output FILE (.csv or .jsonl): columns text, label, p_<class> for each class,
truncated.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from gpt2_jax.commands.common import InputError, load, one_line
from gpt2_jax.data.encoding import kept_words
from gpt2_jax.data.tables import FORMATS, read_table
from gpt2_jax.util.compile_cache import FLAG_HELP, use_compile_cache
from gpt2_jax.util.files import atomic_write
from gpt2_jax.util.runtime import keep_freed_memory

OUTPUT_FORMATS = (".csv", ".jsonl")
MIN_TEXT = 20  # characters of a text shown however narrow the terminal


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.classify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--run",
        required=True,
        metavar="DIR",
        help="run folder written by experiments.spam (holds classifier.json)",
    )
    p.add_argument(
        "texts",
        nargs="*",
        metavar="TEXT",
        help="texts to classify; none and no --input: read one per line from stdin "
        "(UTF-8, blank lines skipped, \\n or \\r\\n line ends)",
    )
    p.add_argument(
        "--input", metavar="FILE", help="read the texts from a CSV, TSV, JSONL or parquet file"
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=("auto", *FORMATS),
        help="format of --input (default: from its extension)",
    )
    p.add_argument(
        "--text-column",
        default="text",
        metavar="NAME",
        help="column of --input that holds the texts (default: text)",
    )
    p.add_argument(
        "--output",
        metavar="FILE",
        help="write predictions to FILE (.csv or .jsonl) instead of stdout",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=16,
        metavar="N",
        help="texts per forward pass (default 16); memory, not results",
    )
    p.add_argument("--no-compile-cache", action="store_true", help=FLAG_HELP)
    return p


def check_args(p: argparse.ArgumentParser, args) -> None:
    """Flag combinations that cannot work: argparse errors (exit 2) before any work."""
    if args.texts and args.input:
        p.error("give texts as arguments or with --input, not both")
    if args.output and Path(args.output).suffix.lower() not in OUTPUT_FORMATS:
        p.error(f"--output {args.output}: the name must end in one of {OUTPUT_FORMATS}")
    if args.output and args.input and Path(args.output).resolve() == Path(args.input).resolve():
        p.error(f"--output {args.output} is the --input file; write the predictions elsewhere")
    if args.batch_size <= 0:
        p.error(f"--batch-size must be positive, got {args.batch_size}")


def read_texts(args) -> list[str]:
    """Texts from the arguments, ``--input`` or stdin (in that order of preference)."""
    if args.texts:
        texts = argument_texts(args.texts)
    elif args.input:
        texts = read_input_file(args.input, args.text_column, args.format)
    else:
        if sys.stdin.isatty():  # otherwise it looks like a hang
            print("reading texts from stdin, one per line (Ctrl-D to end)", file=sys.stderr)
        texts = stdin_texts(sys.stdin.buffer)
    if not texts:
        raise InputError(
            "no texts to classify: give them as arguments, with --input FILE, "
            "or one per line on stdin"
        )
    return texts


def argument_texts(texts: list[str]) -> list[str]:
    """The TEXT arguments, each checked: not blank, and UTF-8 (a byte that is not
    reaches Python as a lone surrogate)."""
    for number, text in enumerate(texts, start=1):
        where = f"TEXT argument {number}"
        if not text.strip():
            raise InputError(
                f"{where} is empty; give a text with at least one visible "
                "character, or leave the argument out"
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise InputError(
                f"{where}, character {err.start + 1}: a byte that is not UTF-8 "
                "(set the terminal to UTF-8)"
            ) from None
    return list(texts)


def stdin_texts(stream) -> list[str]:
    """One text per line of the binary ``stream`` (stdin's bytes): UTF-8 (a leading
    byte-order mark dropped), line ending (``\n`` or ``\r\n``) removed, blank lines
    skipped. A byte that is not UTF-8 is an InputError naming its line and position."""
    texts = []
    for number, line in enumerate(stream, start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(
                f"stdin line {number}, byte {err.start + 1}: "
                f"{line[err.start]:#04x} is not UTF-8 (send UTF-8 text)"
            ) from None
        if number == 1:
            text = text.removeprefix("\ufeff")
        text = text.rstrip("\r\n")
        if text.strip():
            texts.append(text)
    return texts


def read_input_file(path: str, text_column: str, fmt: str) -> list[str]:
    try:
        df = read_table(path, fmt=fmt, text_column=text_column, label_column=None)
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as err:
        message = one_line(err)  # read_table's messages mostly name the file already
        raise InputError(
            message if str(path) in message else f"--input {path}: {message}"
        ) from None
    return df["text"].astype(str).tolist()


def prediction_table(texts: list[str], pred, labels: tuple[str, ...]) -> pd.DataFrame:
    """Columns text, label, p_<class>..., truncated."""
    table = pd.DataFrame({"text": texts, "label": pred.labels})
    for k, name in enumerate(labels):
        table[f"p_{name}"] = pred.probs[:, k].astype(np.float64)
    table["truncated"] = pred.truncated
    return table


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Whole or not at all (``util.files.atomic_write``): never half a file under the name."""

    def write(part: Path) -> None:
        if path.suffix.lower() == ".csv":
            table.to_csv(part, index=False)
        else:
            table.to_json(part, orient="records", lines=True, force_ascii=False)

    atomic_write(path, write)


def shown(text: str) -> str:
    """The text on one line of tab-separated output."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def clip(text: str, width: int) -> str:
    """``text`` as it is if it has at most ``width`` characters, else its start and
    ``...``, ``width`` characters in all."""
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def print_table(
    texts: list[str], pred, labels: tuple[str, ...], columns: int | None = None
) -> None:
    """The predictions, tab-separated; with ``columns`` (a terminal's width) each text
    is clipped so that its line fits, keeping at least ``MIN_TEXT`` characters of it."""
    print("\t".join(["label", *(f"p({name})" for name in labels), "text"]))
    for text, label, probs in zip(texts, pred.labels, pred.probs):
        start = "\t".join([label, *(f"{p:.4f}" for p in probs)]) + "\t"
        text = shown(text)
        if columns is not None:  # -1: a line exactly as wide as the terminal may wrap
            text = clip(text, max(MIN_TEXT, columns - len(start.expandtabs()) - 1))
        print(start + text)


def terminal_columns() -> int | None:
    """The terminal's width when stdout is one, else None (piped output stays whole)."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    check_args(p, args)
    keep_freed_memory()
    use_compile_cache(not args.no_compile_cache)
    try:
        classifier = load(args.run)  # first: a wrong folder fails before stdin is read
        texts = read_texts(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        pred = classifier.predict(texts, batch_size=args.batch_size)
    except ValueError as err:  # a text the tokenizer refuses: which one
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    labels, spec = classifier.labels, classifier.spec
    if args.output:
        try:
            write_table(prediction_table(texts, pred, labels), Path(args.output))
        except OSError as err:
            print(f"error: --output {args.output}: {one_line(err)}", file=sys.stderr)
            return 1
        print(f"wrote {len(texts)} predictions to {args.output}", file=sys.stderr)
    else:
        print_table(texts, pred, labels, terminal_columns())
    print(
        f"{int(pred.truncated.sum())} of {len(texts)} texts were longer than "
        f"{spec.max_length} tokens and were truncated to "
        f"{kept_words(spec.max_length, spec.truncate)}, as in training",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
