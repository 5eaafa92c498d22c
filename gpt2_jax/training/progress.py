"""Progress that counts finished work, and waits a signal can interrupt.

JAX dispatches work asynchronously: a loop that launches batches runs ahead of the
device, so counting launches says "100 %" while most of the work is still queued.
``Progress`` is told when a result is *ready* (``done``), so its bar, rate and time left
describe work that has finished. ``wait_ready`` waits for a result in short sleeps, so
Ctrl-C or SIGTERM is handled at once rather than when a long computation ends (Python
runs signal handlers only between bytecodes of the main thread).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tqdm import tqdm

POLL_SECONDS = 0.02  # the longest a signal waits while a result is awaited
FIRST_POLL_SECONDS = 0.0005  # the sleeps grow from this: a short step is not held up


def wait_ready(x, poll: float = POLL_SECONDS):
    """``x`` once its computation has finished (anything without ``is_ready``: at once).
    The sleeps between checks double from ``FIRST_POLL_SECONDS`` up to ``poll``, so a
    result that is nearly ready is taken at once and a long one costs few wake-ups."""
    is_ready = getattr(x, "is_ready", None)
    delay = min(FIRST_POLL_SECONDS, poll)
    while is_ready is not None and not is_ready():
        time.sleep(delay)
        delay = min(2 * delay, poll)
    return x


class Progress:
    """A count of finished items out of ``total``: a bar on a terminal; without one, and
    given ``log``, a line at each tenth: ``desc: k/total units (p %), t s, rate, time
    left``.

    ``estimate_after``: with that many items or more in all, one line early on says how
    long the whole will take: after the first item (which includes compiling) and a few
    more (a twentieth of the pass, at least one), from their mean time; ``note(seconds)``
    may add to that line. ``quiet_below``: the estimate and the tenth lines only when that
    estimate says the pass takes at least this many seconds (short passes stay quiet)."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "batch",
        units: str = "batches",
        log: Callable[[str], None] | None = None,
        estimate_after: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
        note: Callable[[float], str] | None = None,
        quiet_below: float | None = None,
    ):
        self.total, self.desc, self.units, self.clock = total, desc, units, clock
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, disable=None)
        self.lines = log if self.bar.disable and log else None
        self.log, self.note, self.quiet_below = log, note, quiet_below
        self.estimate = log is not None and estimate_after is not None and total >= estimate_after
        self.estimate_at = max(2, -(-total // 20))  # the item after which to estimate
        self.seconds: float | None = None  # the estimate, once made
        self.marks = {max(1, round(total * k / 10)) for k in range(1, 11)}
        self.start = clock()
        self.first: float | None = None  # when the first item finished
        self.count = 0

    def done(self, n: int = 1) -> None:
        """``n`` more items have finished (their results are on the host or ready)."""
        now = self.clock()
        for _ in range(n):
            self.count += 1
            if self.first is None:
                self.first = now
            if self.count == self.estimate_at and self.estimate:
                self._estimate(now)
            if self.lines and self.count in self.marks and self._loud():
                self.lines(self._line(now))
        self.bar.update(n)

    def _loud(self) -> bool:
        """Whether the tenth lines are worth showing (see ``quiet_below``)."""
        if self.quiet_below is None:
            return True
        if self.seconds is None:  # no estimate (yet): judge by the time so far
            return self.clock() - self.start >= self.quiet_below
        return self.seconds >= self.quiet_below

    def _line(self, now: float) -> str:
        elapsed = now - self.start
        line = (
            f"{self.desc}: {self.count}/{self.total} {self.units} "
            f"({100 * self.count // self.total} %), {elapsed:.0f} s"
        )
        if 0 < self.count < self.total and elapsed > 0:
            rate = self.count / elapsed
            line += (
                f", {rate:.3g} {self.units}/s, about {(self.total - self.count) / rate:.0f} s left"
            )
        return line

    def _estimate(self, now: float) -> None:
        assert self.first is not None and self.log is not None
        first = self.first - self.start
        each = (now - self.first) / (self.count - 1)
        self.seconds = first + each * (self.total - 1)
        if self.quiet_below is not None and self.seconds < self.quiet_below:
            return
        self.log(
            f"{self.desc}: about {_seconds(self.seconds)} s for {self.total} {self.units} (the first "
            f"took {first:.1f} s with compiling, the next {each:.2f} s)"
            + (self.note(self.seconds) if self.note is not None else "")
        )

    def close(self) -> None:
        self.bar.close()


def _seconds(t: float) -> str:
    """Whole seconds, or two digits below ten."""
    return f"{t:.0f}" if t >= 10 else f"{t:.2g}"
