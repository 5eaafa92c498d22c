"""What several commands share: a user's mistake as one line, a run folder's classifier."""

from __future__ import annotations


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
