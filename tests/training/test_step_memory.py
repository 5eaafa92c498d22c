"""The per-device memory plan of the training step, from XLA's analysis of the step
compiled on abstract shapes: checked against a measured run, and for 1558M on 8 devices."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

GIB = 1024**3
MIB = 1024**2


def _start(*args, env=None):
    return subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "step_memory_worker.py"), *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(worker):
    try:
        out, err = worker.communicate(timeout=900)
    except BaseException:
        worker.kill()
        raise
    assert worker.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _worker(*args, env=None):
    return _result(_start(*args, env=env))


@pytest.mark.slow
@pytest.mark.parametrize("batch, length", [(16, 128), (32, 256)])
def test_plan_matches_the_memory_a_step_takes(batch, length):
    got = _worker("measure", str(batch), str(length))
    # Stated margin: the step's measured growth of the process's peak memory is within
    # 15 % (+32 MiB of allocator slack) of XLA's temporaries; its inputs and outputs
    # were in place before (the new state reuses the donated one).
    assert abs(got["grew"] - got["temporaries"]) <= 0.15 * got["temporaries"] + 32 * MIB, got
    assert got["temporaries"] > 100 * MIB  # a step big enough for the margin to mean something


def _extrapolated(plan: dict) -> dict:
    """The figures at ``plan["n_layer"]`` blocks from those at 2, 3 and 4 blocks, after
    checking that they grow by one amount per block: the weights, Adam moments and their
    gradients exactly, the temporaries (activations kept for the backward pass) to 5 %."""
    a, b, c = plan["2"], plan["3"], plan["4"]
    out = {}
    for key in ("arguments", "temporaries", "peak"):
        first, second = b[key] - a[key], c[key] - b[key]
        assert first > 0 and second > 0, (key, plan)
        if key == "arguments":
            assert first == second, (key, plan)
        else:
            assert abs(second - first) <= 0.05 * first, (key, plan)
        out[key] = c[key] + (plan["n_layer"] - 4) * second
    return out


@pytest.mark.slow
def test_1558m_all_layers_fits_80gb_on_8_devices_and_not_on_one():
    """Proves, from XLA's analysis of the compiled step (batches of 16 x 1024, every
    layer trainable, Adam), that 1558M needs under 80 GiB per device on fsdp=8 and more
    than 80 GiB on one device, and that fsdp cuts the trainable state in 8.

    Compiling 1558M's 48 blocks twice took minutes; the step is compiled instead at
    1558M's width with 2, 3 and 4 blocks on each mesh (the two meshes in two processes
    at once). Every figure grows by one amount per block (checked here), so 48 blocks
    are 4 blocks plus 44 times that amount. Checked once against the 48-block compile
    (``step_memory_worker.py plan-full fsdp=8`` / ``data=1``): on both meshes the
    extrapolated temporaries were within 0.02 % of it (fsdp=8 42.4 GB peak, one device
    300 GB) and the arguments equal."""
    # LLVM's optimisations off: the steps are only compiled, never run, and XLA's
    # buffer plan is made before code generation (its figures were byte-identical at
    # the default level, on both meshes), so a third of the compile time goes.
    eight_devices = {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
    }
    workers = [_start("plan", mesh, env=eight_devices) for mesh in ("fsdp=8", "data=1")]
    try:
        plans = [_result(w) for w in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert [p["devices"] for p in plans] == [8, 8] and plans[0]["n_layer"] == 48
    eight, one = (_extrapolated(p) for p in plans)
    assert eight["peak"] < 80 * GIB < one["peak"], (eight, one)
    # the trainable state (weights, Adam moments) is cut in 8: arguments per device
    assert eight["arguments"] == pytest.approx(one["arguments"] / 8, rel=0.01)
    assert one["arguments"] > 4 * 3 * 1.5e9  # 1.5 G parameters x (weights, m, v) x 4 bytes
