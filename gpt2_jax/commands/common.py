"""What several commands share: a user's mistake as one line, a run folder's classifier, the --decision-threshold override."""

from __future__ import annotations

import argparse
import math


class InputError(Exception):
    """A problem with what the user gave (texts, files); reported as one line, exit 1."""


def one_line(err: BaseException) -> str:
    """The message on one line: a list of problems (one per line) is joined with "; "."""
    lines = [line.strip() for line in str(err).strip().strip("'\"").splitlines() if line.strip()]
    if not lines:  # KeyError quotes its message, hence the strip above
        return type(err).__name__
    head, rest = lines[0], lines[1:]
    return head if not rest else f"{head.rstrip(':')}: " + "; ".join(rest)


def load(run: str):
    """The classifier in ``run``; a folder that is not a finished run is an InputError."""
    from gpt2_jax.classifier.classifier import Classifier

    try:
        return Classifier.load(run)
    except (OSError, ValueError) as err:
        raise InputError(one_line(err)) from None
    except RuntimeError as err:  # the tokenizer: no BPE files and no network
        raise InputError(f"{run}: {one_line(err)}") from None


def threshold_arg(value: str) -> float | str:
    """``--decision-threshold``: a probability in [0, 1], or ``argmax``."""
    if value == "argmax":
        return value
    try:
        t = float(value)
    except ValueError:
        t = math.nan
    if not 0 <= t <= 1:  # also NaN
        raise argparse.ArgumentTypeError(f"{value!r} is not a probability in [0, 1] or argmax")
    return t


def with_threshold(classifier, threshold: float | str | None):
    """``classifier`` deciding by ``--decision-threshold`` (None: as saved)."""
    if threshold is None:
        return classifier
    if len(classifier.labels) != 2:
        raise InputError(
            f"--decision-threshold is for two classes; this classifier has "
            f"{len(classifier.labels)} ({', '.join(classifier.labels)}): leave it out"
        )
    return classifier.with_threshold(None if threshold == "argmax" else threshold)
