"""The allocator setting and the quiet start-up of the command-line entry points
(gpt2_jax.util.runtime)."""

import os
import subprocess
import sys

import pytest
from conftest import REPO

from gpt2_jax.util.runtime import native_noise

SCRIPT = """
import sys
import numpy as np
from gpt2_jax.util.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

base = rss_mib()
a = np.ones(64 << 18, np.float32)  # 64 MiB, touched
del a
print(rss_mib() - base)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc only")
def test_freed_blocks_stay_with_the_process():
    """Default glibc returns a freed 64 MiB block to the OS (so the next call faults it
    in again); with keep_freed_memory it stays, ready for the next allocation."""
    grown = {
        mode: float(
            subprocess.run(
                [sys.executable, "-c", SCRIPT, mode], check=True, capture_output=True, text=True
            ).stdout
        )
        for mode in ("default", "keep")
    }
    assert grown["default"] < 16 and grown["keep"] > 48, grown


NOISE = ("oneDNN custom operations are on", "All log messages before absl::InitializeLog()")


def _export(model_dir, out, *flags):
    """``experiments.export --model-dir`` (reads OpenAI's TensorFlow checkpoint) in a
    process whose environment leaves the log level unset."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "experiments.export", "--model-dir", str(model_dir)]
        + ["--to", "hf", str(out), *flags],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


@pytest.mark.slow
def test_commands_keep_tensorflows_start_up_lines_off_stderr(tiny_model_dir, tmp_path):
    pytest.importorskip("tensorflow")
    quiet = _export(tiny_model_dir, tmp_path / "quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if any(n in line for n in NOISE)]
    debug = _export(tiny_model_dir, tmp_path / "debug", "--debug")  # shows them, if any
    assert debug.returncode == 0, debug.stderr


NATIVE_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called",
    "I0000 00:00:1796033149.731356    6233 port.cc:153] oneDNN custom operations are on.",
    "E0512 10:11:12.345678   17 cuda_dnn.cc:8] Unable to register cuDNN factory",
    "a line of its own",
]
FD_SCRIPT = """
import os, sys
from gpt2_jax.util.runtime import native_stderr_filtered, quiet_native_logs
quiet_native_logs(debug=sys.argv[1] == "debug")
with native_stderr_filtered():  # as native code writes: straight to file descriptor 2
    for line in sys.argv[2:]:
        os.write(2, line.encode() + b"\\n")
print("after", file=sys.stderr)
"""


@pytest.mark.parametrize("mode", ["quiet", "debug"])
def test_native_lines_below_the_level_are_dropped_unless_debug(mode):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-c", FD_SCRIPT, mode, *NATIVE_LINES],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    shown = NATIVE_LINES if mode == "debug" else NATIVE_LINES[2:]
    assert out.stderr.splitlines() == shown + ["after"]


def test_native_noise_drops_only_what_the_level_hides():
    info = "I0000 00:00:1796033149.731356    6233 port.cc:153] oneDNN custom operations are on."
    warning = "W0512 10:11:12.345678   17 cpu_allocator_impl.cc:84] Allocation of 1 exceeds 10%"
    error = "E0512 10:11:12.345678   17 cuda_dnn.cc:8] Unable to register cuDNN factory"
    header = "WARNING: All log messages before absl::InitializeLog() is called are written"
    assert [native_noise(x, 2) for x in (info, warning, error, header)] == [1, 1, 0, 1]
    assert [native_noise(x, 1) for x in (info, warning, error, header)] == [1, 0, 0, 1]
    assert not any(native_noise(x, 0) for x in (info, warning, error, header))
    assert not native_noise("error: --model-dir x: no such folder", 3)


def test_quiet_keeps_the_users_level_and_onednn(monkeypatch):
    from gpt2_jax.util import runtime

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # as ``import jax`` leaves it
    monkeypatch.setattr(runtime, "USER_LOG_LEVEL", None)
    runtime.quiet_native_logs(debug=True)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    runtime.quiet_native_logs(debug=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ  # it changes numbers: never set
    monkeypatch.setattr(runtime, "USER_LOG_LEVEL", "3")
    runtime.quiet_native_logs(debug=True)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"


def test_the_users_level_is_read_before_jax_sets_its_own():
    script = "import os, gpt2_jax; print(gpt2_jax.util.runtime.USER_LOG_LEVEL)"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["None"], out.stderr
