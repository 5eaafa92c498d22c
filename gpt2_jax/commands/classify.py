"""Classify texts with a classifier trained by ``experiments.spam`` or ``experiments.finetune``.

    python -m experiments.classify --run runs/spam-124M-... "WINNER!! Claim your prize now"
    cat messages.txt | python -m experiments.classify --run DIR     # one text per line
    python -m experiments.classify --run DIR --input inbox.csv --output predictions.jsonl

Everything about the classifier (label names, pooling, max length, tokenizer, model)
is read from the run folder; no training flag is needed. Each text gets the label
with the highest probability (argmax over the classes), or, for two classes with a
decision threshold (saved by the run, or given with --decision-threshold), the second
label when its probability reaches the threshold. Texts longer than the
classifier's max_length tokens are cut as in training (their first max_length
tokens, or the part --truncate chose; a classifier trained with --long-texts chunk
reads up to --max-chunks chunks of each text and leaves the rest); stderr says how many
were. Texts must be
UTF-8 (arguments, stdin, --input); a byte that is not, or an empty text, stops with
where it is (TEXT argument N, stdin line N, file line N). Stdin lines may end in \\n or \\r\\n; blank ones are skipped.

Output without --output: a header line, then one line per text,
tab-separated: label, one probability per class, the text (tabs and newlines in it
shown as \\t and \\n). On a terminal the text is cut with "..." to fit the line
(its width from COLUMNS or the terminal); piped or redirected, it is whole. With
--output FILE (.csv or .jsonl): columns text, label, p_<class> for each class,
truncated.

--input FILE is read, classified and written --chunk-size texts at a time (CSV, TSV
and JSONL streamed, Parquet a row group at a time; SMS files read whole), so memory does
not grow with the file; every row is checked first, so a bad one stops the command before
any work.
Predictions go to FILE.partial as they come and become FILE at the end; after a kill
or Ctrl-C, the same command continues from the last chunk written (a FILE.partial
started for another input, run, text column or --dtype is refused).

--dtype bfloat16 gives the matmuls bfloat16 inputs and float32 accumulation: faster only
on CPUs with bfloat16 units (AMX, AVX512-bf16) and on GPUs; probabilities differ
slightly from float32's. --mesh data=N splits the packed rows of every batch over N
devices (the weights copied to each); the probabilities are one device's (within 1e-5).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpt2_jax.classifier.weights_file import prefetch_run
from gpt2_jax.commands.classify_output import (  # noqa: F401  (print_table: the API)
    MIN_TEXT,
    OUTPUT_FORMATS,
    prediction_table,
    print_table,
    terminal_columns,
    write_table,
)
from gpt2_jax.commands.classify_stream import CHUNK_TEXTS, classify_file
from gpt2_jax.commands.common import InputError, load, one_line, threshold_arg, with_threshold
from gpt2_jax.data.encoding import kept_words
from gpt2_jax.data.records import FORMATS
from gpt2_jax.util.compile_cache import FLAG_HELP, use_compile_cache
from gpt2_jax.util.runtime import keep_freed_memory


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
    p.add_argument(
        "--chunk-size",
        type=int,
        default=CHUNK_TEXTS,
        metavar="N",
        help=f"with --input: texts read, classified and written at a time (default "
        f"{CHUNK_TEXTS}); memory stays bounded by it, whatever the file's size",
    )
    p.add_argument(
        "--decision-threshold",
        type=threshold_arg,
        metavar="P|argmax",
        help="two classes: the second class when its probability is at least P (0..1), "
        "instead of the threshold the run saved (--decision-threshold in training); "
        "argmax: the most probable class (default: what classifier.json says)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),  # classifier.PREDICT_DTYPES (not imported: JAX)
        help="matmul inputs: float32 (default) or bfloat16 (bfloat16 matmul inputs, float32 "
        "accumulation; faster only on CPUs with bfloat16 units (AMX/AVX512-bf16) and GPUs; "
        "probabilities differ slightly from float32)",
    )
    p.add_argument(
        "--mesh",
        metavar="data=N",
        help="split the rows of each batch over N devices (the weights copied to each; "
        "on a CPU, N devices need XLA_FLAGS=--xla_force_host_platform_device_count=N)",
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
    if args.chunk_size <= 0:
        p.error(f"--chunk-size must be positive, got {args.chunk_size}")


def check_mesh(p: argparse.ArgumentParser, args) -> None:
    """``--mesh``: data=N only (an argparse error otherwise). After ``prefetch_run``: the
    mesh module imports JAX."""
    if args.mesh is None:
        return
    from gpt2_jax.parallel.mesh import MESH_PAIRS, parse_mesh

    try:
        sizes = parse_mesh(args.mesh)
    except ValueError as err:  # its example names fsdp too, which classify refuses
        p.error(str(err).replace(MESH_PAIRS, "expected data=N (N devices)"))
    if set(sizes) != {"data"}:
        p.error(f"--mesh {args.mesh}: classify splits rows over the data axis only; give data=N")


def computing(classifier, args):
    """``classifier`` with ``--dtype`` and on ``--mesh`` (a bad mesh: ValueError)."""
    classifier = classifier.with_dtype(args.dtype)
    if args.mesh is None:
        return classifier
    from gpt2_jax.parallel.mesh import make_mesh

    return classifier.on_mesh(make_mesh(args.mesh))


def read_texts(args) -> list[str]:
    """Texts from the arguments or stdin (``--input`` is streamed: ``classify_stream``)."""
    if args.texts:
        texts = argument_texts(args.texts)
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


def classify_texts(classifier, texts: list[str], args) -> tuple[int, int]:
    """Texts from the arguments or stdin, classified at once; (texts, of them truncated)."""
    pred = classifier.predict(texts, batch_size=args.batch_size)
    if args.output:
        write_table(prediction_table(texts, pred, classifier.labels), Path(args.output))
        print(f"wrote {len(texts)} predictions to {args.output}", file=sys.stderr)
    else:
        print_table(texts, pred, classifier.labels, terminal_columns())
    return len(texts), int(pred.truncated.sum())


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    check_args(p, args)
    keep_freed_memory()
    prefetch_run(args.run)  # the weights are read while JAX is imported
    check_mesh(p, args)
    use_compile_cache(not args.no_compile_cache)
    try:
        # first: a wrong folder fails before stdin is read
        classifier = computing(with_threshold(load(args.run), args.decision_threshold), args)
        if args.input:
            count, truncated = classify_file(classifier, args)
        else:
            count, truncated = classify_texts(classifier, read_texts(args), args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # a text the tokenizer refuses: which one
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    except OSError as err:  # reading --input is an InputError: this is writing
        where = f"--output {args.output}" if args.output else "stdout"
        print(f"error: {where}: {one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        again = "; run the same command again to continue" if args.output and args.input else ""
        print(f"interrupted{again}", file=sys.stderr)
        return 130
    print(truncation_words(classifier.spec, truncated, count), file=sys.stderr)
    return 0


def truncation_words(spec, truncated: int, count: int) -> str:
    """How many texts were cut, and to what, as the classifier cuts them."""
    c = spec.chunking
    if c is not None:  # chunks of max_length tokens every stride, at most max_chunks
        return (
            f"{truncated} of {count} texts were longer than the {c.covered} tokens that "
            f"{c.max_chunks} chunks of {c.length} (every {c.stride}) hold, and only their "
            f"first {c.max_chunks} chunks were read, as in training"
        )
    return (
        f"{truncated} of {count} texts were longer than "
        f"{spec.max_length} tokens and were truncated to "
        f"{kept_words(spec.max_length, spec.truncate)}, as in training"
    )


if __name__ == "__main__":
    sys.exit(main())
