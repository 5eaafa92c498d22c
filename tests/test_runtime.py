"""The allocator setting of the command-line entry points (gpt2_jax.util.runtime)."""

import subprocess
import sys

import pytest

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
