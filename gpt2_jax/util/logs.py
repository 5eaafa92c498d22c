"""Where a run's messages go: the terminal, through ``logging`` (the commands configure it;
processes other than 0 show warnings only), and the run folder's ``run.log``.

Modules log to ``logging.getLogger(__name__)``, all below the ``gpt2_jax`` logger, so an
application can route or silence them like any library's; no function of the library takes a
``log`` callable except ``run`` (its messages to that callable instead of the terminal) and
``Progress``, which is handed its module's logger. ``run_log``
keeps a copy of what a run said, timestamped, in its folder.
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


class _Sink(logging.Handler):
    """Each message, as a plain line, to a callable (``run(cfg, log=...)``)."""

    def __init__(self, log: Callable[[str], None]):
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log(record.getMessage())


class _RunLog(logging.Handler):
    """Each message after a timestamp, appended to the run folder's ``run.log``."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def emit(self, record: logging.LogRecord) -> None:
        self.line(record.getMessage())

    def line(self, message: str) -> None:
        self.f.write(f"{dt.datetime.now():%Y-%m-%d %H:%M:%S} {message}\n")
        self.f.flush()


@contextlib.contextmanager
def run_log(
    path: Path | None, log: Callable[[str], None] | None = None, main: bool = True
) -> Iterator[None]:
    """While a run goes on, everything the ``gpt2_jax`` loggers say is also appended,
    after a timestamp, to ``path`` (None: nowhere; a resumed run appends to the same file).
    ``log``: the run's messages go to this callable instead of the terminal. ``main``
    False (a process other than 0): warnings and errors only. An exception leaving the
    block is written to ``path`` too, as the one line the terminal shows."""
    logger = logging.getLogger(LOGGER)
    saved = logger.handlers[:], logger.level, logger.propagate
    if log is not None:
        logger.handlers, logger.propagate = [_Sink(log)], False
        logger.setLevel(logging.INFO)
    else:
        ensure_terminal()  # unless the application configured logging: then its levels
    if not main:
        logger.setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        keep = None
        if path is not None:
            keep = _RunLog(stack.enter_context(open(path, "a", encoding="utf-8")))
            logger.addHandler(keep)
        try:
            yield
        except BaseException as err:
            if keep is not None:
                text = (str(err).splitlines() or [""])[0] or type(err).__name__
                word = "stopped" if isinstance(err, KeyboardInterrupt) else "error"
                keep.line(f"{word}: {text}")
            raise
        finally:
            logger.handlers, logger.level, logger.propagate = saved
