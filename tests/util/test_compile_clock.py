"""The compile clock measures JAX's own tracing, lowering and compiling time spans: nested
spans once, a program that is already compiled not at all, and programs loaded from the
persistent compilation cache counted as such."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from gpt2_jax.util.compile_clock import SPANS, CompileClock, covered

REPO = Path(__file__).resolve().parents[2]
needs_spans = pytest.mark.skipif(not SPANS, reason="this JAX reports no time spans")


@pytest.mark.parametrize(
    "spans, seconds",
    [
        ([], 0.0),
        ([(0.0, 1.0)], 1.0),
        ([(0.0, 4.0), (1.0, 2.0)], 4.0),  # nested: the inner span adds nothing
        ([(0.0, 2.0), (1.0, 3.0)], 3.0),  # overlapping
        ([(5.0, 6.0), (0.0, 1.0), (0.5, 2.0)], 3.0),  # unsorted, one gap
    ],
)
def test_covered_is_the_union(spans, seconds):
    assert covered(spans) == pytest.approx(seconds)


@needs_spans
def test_a_new_program_is_timed_and_a_compiled_one_is_not():
    def f(x):
        return jnp.tanh(x) @ x.T + 41.0  # a function no other test compiles

    x = jnp.ones((7, 13))
    with CompileClock() as clock:
        jax.jit(f)(x).block_until_ready()
    first = clock.time()
    assert first is not None and first.programs >= 1 and first.from_cache == 0
    assert 0 < first.compile <= first.total and 0 < first.trace <= first.total
    g = jax.jit(f)
    g(x).block_until_ready()
    with CompileClock() as clock:
        g(x).block_until_ready()  # already compiled: nothing to make
    again = clock.time()
    assert again is not None and again.programs == 0 and again.total == 0.0


SCRIPT = """
import json, sys, jax, jax.numpy as jnp
from gpt2_jax.util.compile_clock import CompileClock
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
with CompileClock() as clock:
    jax.jit(lambda x: jnp.cos(x) @ x)(jnp.ones((16, 16))).block_until_ready()
print(json.dumps(clock.time().to_dict()))
"""


@needs_spans
def test_programs_from_the_persistent_cache_are_counted(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}

    def once() -> dict:
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path / "cache")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    cold, warm = once(), once()
    assert cold["programs"] >= 1 and cold["from_cache"] == 0
    assert warm["programs"] == cold["programs"] and warm["from_cache"] >= 1


@needs_spans
def test_a_clock_survives_cleared_listeners_and_refuses_a_second_entry():
    clock = CompileClock()
    with clock:
        with pytest.raises(RuntimeError, match="already open"), clock:
            pass
        # as if other code had cleared JAX's listeners (clear_event_listeners): exit works
        jax.monitoring.unregister_event_time_span_listener(clock._on_span)
        jax.monitoring.unregister_event_listener(clock._on_event)
    with CompileClock() as again:
        jax.jit(lambda x: x * 3 - 1)(jnp.ones(5)).block_until_ready()
    assert again.time().programs >= 1
