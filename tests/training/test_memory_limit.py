"""The run's memory check counts the container's (cgroup's) limit, by the data budget's rule."""

import pytest

from gpt2_jax.data import budget
from gpt2_jax.model.config import settings_for_size
from gpt2_jax.training import memory

GIB = 1 << 30


@pytest.mark.parametrize(
    "files",
    [
        {"/sys/fs/cgroup/memory.max": GIB, "/sys/fs/cgroup/memory.current": GIB // 4},
        {
            "/sys/fs/cgroup/memory/memory.limit_in_bytes": GIB,
            "/sys/fs/cgroup/memory/memory.usage_in_bytes": GIB // 4,
        },
    ],
    ids=["cgroup v2", "cgroup v1"],
)
def test_available_bytes_counts_the_cgroup_limit(monkeypatch, files):
    monkeypatch.setattr(budget, "_read_int", files.get)  # a container: 1 GiB, 0.25 used
    free = memory.available_bytes()
    assert free is not None and 0 <= free <= GIB - GIB // 4
    assert free == budget.memory_available()
    # the lab's estimate (5.1 GiB) is over that limit: the run warns before loading
    line = memory.memory_check(settings_for_size("124M"), 3500, 257, True)
    assert line.startswith("WARNING: estimated peak memory 5.1 GiB")


def test_without_a_limit_it_is_what_the_machine_has(monkeypatch):
    monkeypatch.setattr(budget, "_read_int", lambda path: None)  # "max", or no cgroup files
    free = memory.available_bytes()  # MemAvailable, or the free pages
    assert free is not None and free > GIB - GIB // 4  # more than the container above
