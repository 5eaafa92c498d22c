"""Where a run's messages go: the terminal, through ``logging`` (the commands configure it;
processes other than 0 show warnings only), and the run folder's ``run.log``.

Modules log to ``logging.getLogger(__name__)``, all below the ``gpt2_jax`` logger, so an
application can route or silence them like any library's. ``run_log`` keeps a copy of what
a run said, timestamped, in its folder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

LOGGER = "gpt2_jax"
RUN_LOG = "run.log"


class _Stdout(logging.StreamHandler):
    """Plain lines on whatever ``sys.stdout`` is when a message comes (tests, notebooks and
    ``contextlib.redirect_stdout`` replace it after the handler is made)."""

    terminal = True

    def __init__(self):
        super().__init__(sys.stdout)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def configure_terminal(main: bool = True) -> None:
    """gpt2_jax's messages on stdout, one plain line each; on a process other than 0
    (``main=False``) only warnings and errors, so one process speaks for the run."""
    logger = logging.getLogger(LOGGER)
    if not any(getattr(h, "terminal", False) for h in logger.handlers):
        logger.addHandler(_Stdout())
    logger.setLevel(logging.INFO if main else logging.WARNING)
    logger.propagate = False  # the application's root handlers would print it twice


def ensure_terminal() -> None:
    """``configure_terminal()`` unless the application set up logging itself (a handler on
    the root or the ``gpt2_jax`` logger): the Python API then shows progress as the
    commands do."""
    if not logging.getLogger().handlers and not logging.getLogger(LOGGER).handlers:
        configure_terminal()


@contextlib.contextmanager
def run_log(path: Path | None, log: Callable[[str], None]) -> Iterator[Callable[[str], None]]:
    """``log`` that also appends each message, after a timestamp, to ``path`` (None: just
    ``log``). A resumed run appends to the same file. An exception leaving the block is
    written there too, as the one line the terminal shows."""
    if path is None:
        yield log
        return
    with open(path, "a", encoding="utf-8") as f:

        def both(message: str) -> None:
            log(message)
            f.write(f"{dt.datetime.now():%Y-%m-%d %H:%M:%S} {message}\n")
            f.flush()

        try:
            yield both
        except BaseException as err:
            text = (str(err).splitlines() or [""])[0] or type(err).__name__
            word = "stopped" if isinstance(err, KeyboardInterrupt) else "error"
            f.write(f"{dt.datetime.now():%Y-%m-%d %H:%M:%S} {word}: {text}\n")
            raise
