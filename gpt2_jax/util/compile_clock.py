"""How long JAX spent making programs while a ``CompileClock`` was open: tracing Python
into jaxprs, lowering them to XLA, and compiling (or loading from the persistent
compilation cache).

JAX reports each of these as a time span (``jax.monitoring``). Spans nest - a jitted
function traced inside another is its own span within the outer one - and come from any
thread, so the clock keeps the spans and measures the time covered by their union, not
the sum of their lengths.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import jax

PHASES = {  # JAX's event -> our name
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
}
CACHE_HIT = "/jax/compilation_cache/cache_hits"
SPANS = hasattr(jax.monitoring, "unregister_event_time_span_listener")  # a recent JAX


def covered(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of ``(start, end)`` spans."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


@dataclass
class CompileTime:
    """Seconds of each phase (overlaps inside a phase counted once) and of all of them
    together (``total``); ``programs``: backend compilations started, of which
    ``from_cache`` were loaded from the persistent compilation cache."""

    trace: float = 0.0
    lower: float = 0.0
    compile: float = 0.0
    total: float = 0.0
    programs: int = 0
    from_cache: int = 0

    def to_dict(self) -> dict:
        out = {k: round(v, 3) for k, v in vars(self).items() if isinstance(v, float)}
        return {**out, "programs": self.programs, "from_cache": self.from_cache}

    def line(self, wall: float) -> str:
        """One log line: the share of ``wall`` seconds spent making programs."""
        share = 100 * self.total / wall if wall > 0 else 0.0
        return (
            f"making programs took {self.total:.1f} s of {wall:.1f} s ({share:.0f} %): "
            f"tracing {self.trace:.1f} s, lowering {self.lower:.1f} s, compiling "
            f"{self.compile:.1f} s ({self.programs} programs, {self.from_cache} of them "
            f"from the compilation cache)"
        )


class CompileClock:
    """``with CompileClock() as clock: ...`` then ``clock.time()``: what JAX spent
    tracing, lowering and compiling meanwhile (in every thread of the process)."""

    def __init__(self) -> None:
        self._spans: dict[str, list[tuple[float, float]]] = {p: [] for p in PHASES.values()}
        self._hits = 0
        self._lock = threading.Lock()
        self._open = False

    def _on_span(self, event: str, start_time: float, end_time: float, **_: str | int) -> None:
        phase = PHASES.get(event)
        if phase is not None:
            with self._lock:
                self._spans[phase].append((start_time, end_time))

    def _on_event(self, event: str, **_: str | int) -> None:
        if event == CACHE_HIT:
            with self._lock:
                self._hits += 1

    def __enter__(self) -> CompileClock:
        if self._open:
            raise RuntimeError("this CompileClock is already open; use a new one")
        self._open = True
        if SPANS:
            jax.monitoring.register_event_time_span_listener(self._on_span)
            jax.monitoring.register_event_listener(self._on_event)
        return self

    def __exit__(self, *exc) -> None:
        self._open = False
        if not SPANS:
            return
        # gone already if something called jax.monitoring.clear_event_listeners()
        with contextlib.suppress(AssertionError, ValueError):
            jax.monitoring.unregister_event_time_span_listener(self._on_span)
        with contextlib.suppress(AssertionError, ValueError):
            jax.monitoring.unregister_event_listener(self._on_event)

    def time(self) -> CompileTime | None:
        """None where this JAX reports no time spans (older than the clock needs)."""
        if not SPANS:
            return None
        with self._lock:
            spans = {phase: list(s) for phase, s in self._spans.items()}
            hits = self._hits
        return CompileTime(
            trace=covered(spans["trace"]),
            lower=covered(spans["lower"]),
            compile=covered(spans["compile"]),
            total=covered([s for phase in spans.values() for s in phase]),
            programs=len(spans["compile"]),
            from_cache=hits,
        )
