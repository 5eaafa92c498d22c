"""Micro-batching: texts from concurrent requests classified in one call.

A jitted forward pass over 8 texts costs far less than 8 passes over one text (the
weights are read once, the matrix products are wider), so a server that runs one call
per request wastes most of its time under load. ``MicroBatcher`` keeps one worker
thread: it takes the first waiting request, collects more until ``wait_ms``
milliseconds after that request arrived or until ``max_batch`` texts are waiting, and
runs one call over all of them (a request of more than ``max_batch`` texts runs as
calls of ``max_batch``). The call (``classify(texts, batch_size)``, normally
``Classifier.predict``) gives the results of each text alone; ``batch_size`` is
rounded up to a power of two so that few shapes are ever compiled, and the server's
warm-up compiles them all (``server.warm_up``).

The worker never dies on a failed call: if a combined call raises, each request is
retried alone, so one bad request cannot fail the others it was batched with.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import numpy as np

from gpt2_jax.classifier.classifier import Predictions

Classify = Callable[[list[str], int], Predictions]


def batch_rows(n: int, max_batch: int) -> int:
    """Rows of the compiled batch for ``n`` texts: the next power of two, at most
    ``max_batch`` (more texts than that run as several calls of ``max_batch`` rows)."""
    rows = 1
    while rows < n:
        rows *= 2
    return min(rows, max_batch)


@dataclass
class _Request:
    texts: list[str]
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """Counts since the start: ``calls`` to the classifier, ``requests`` and ``texts``
    answered. ``requests / calls`` is how many requests a call served on average."""

    calls: int = 0
    requests: int = 0
    texts: int = 0
    largest: int = 0  # most texts in one call

    def to_dict(self) -> dict:
        return {
            "calls": self.calls,
            "requests": self.requests,
            "texts": self.texts,
            "largest_batch": self.largest,
        }


class MicroBatcher:
    """Collects texts from concurrent ``submit`` calls and classifies them together.

    ``enabled=False`` runs one call per request (same worker, no waiting): the
    baseline that batching is measured against."""

    def __init__(
        self, classify: Classify, *, max_batch: int = 32, wait_ms: float = 5.0, enabled: bool = True
    ):
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
        if not wait_ms >= 0:
            raise ValueError(f"wait_ms must be >= 0, got {wait_ms!r}")
        self._classify = classify
        self.max_batch, self.wait_ms, self.enabled = max_batch, float(wait_ms), enabled
        self.stats = BatchStats()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._held: _Request | None = None  # taken from the queue, runs in the next call
        self._thread: threading.Thread | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> MicroBatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="micro-batcher", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker after the requests already queued; later submits fail."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None
        self._fail_queued()

    def __enter__(self) -> MicroBatcher:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ use

    def submit(self, texts: list[str]) -> Future:
        """A future of the ``Predictions`` of ``texts`` (already validated: a list of
        non-empty strings)."""
        request = _Request(list(texts))
        if self._closed or self._thread is None:
            request.future.set_exception(
                RuntimeError("the classifier is not running (the server is stopping)")
            )
            return request.future
        self._queue.put(request)
        return request.future

    def predict(self, texts: list[str], timeout: float | None = None) -> Predictions:
        """``submit`` and wait: for callers without an event loop."""
        return self.submit(texts).result(timeout)

    # ------------------------------------------------------------------ worker

    def _work(self) -> None:
        while True:
            first, self._held = (self._held or self._queue.get()), None
            if first is None:
                return
            pending, stop = self._collect(first)
            self._run(pending)
            if stop:
                return

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        """``first`` and whatever arrives within ``wait_ms`` of it (up to ``max_batch``
        texts). The window starts when ``first`` arrived, not when the worker got to it:
        under load the queue has filled during the previous call and nothing waits."""
        pending, count = [first], len(first.texts)
        if not self.enabled:
            return pending, False
        deadline = first.arrived + self.wait_ms / 1000
        while count < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is None:
                return pending, True
            if count + len(item.texts) > self.max_batch:
                self._held = item  # it opens the next call: a call holds at most max_batch
                break
            pending.append(item)
            count += len(item.texts)
        return pending, False

    def _run(self, pending: list[_Request]) -> None:
        pending = [r for r in pending if not r.future.cancelled()]  # nobody waits for those
        if not pending:
            return
        texts = [t for r in pending for t in r.texts]
        try:
            pred = self._calls(texts)
        except Exception as err:  # noqa: BLE001 - the worker must survive any request
            if len(pending) > 1:  # find the request at fault: each alone
                for request in pending:
                    self._run([request])
            else:
                _settle(pending[0].future, error=err)
            return
        self.stats.calls += -(-len(texts) // self.max_batch)
        self.stats.requests += len(pending)
        self.stats.texts += len(texts)
        self.stats.largest = max(self.stats.largest, min(len(texts), self.max_batch))
        start = 0
        for request in pending:
            end = start + len(request.texts)
            _settle(
                request.future,
                result=Predictions(
                    pred.labels[start:end],
                    pred.probs[start:end],
                    pred.truncated[start:end],
                    pred.class_names,
                    None if pred.sets is None else pred.sets[start:end],
                ),
            )
            start = end

    def _calls(self, texts: list[str]) -> Predictions:
        """One call per ``max_batch`` texts (a request alone may hold more), so no call
        needs a shape that the warm-up of calls up to ``max_batch`` texts did not compile."""
        parts = []
        for i in range(0, len(texts), self.max_batch):
            part = texts[i : i + self.max_batch]
            parts.append(self._classify(part, batch_rows(len(part), self.max_batch)))
        if len(parts) == 1:
            return parts[0]
        sets = [p.sets for p in parts if p.sets is not None]
        return Predictions(
            [label for p in parts for label in p.labels],
            np.concatenate([p.probs for p in parts]),
            np.concatenate([p.truncated for p in parts]),
            parts[0].class_names,
            np.concatenate(sets) if sets else None,
        )

    def _fail_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                _settle(
                    item.future,
                    error=RuntimeError("the server stopped before this request was classified"),
                )


def _settle(future: Future, *, result=None, error: BaseException | None = None) -> None:
    """Resolve ``future`` unless its caller gave up on it (cancelled)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
