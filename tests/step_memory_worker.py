"""Run in a process of its own; prints one JSON line.

    python tests/step_memory_worker.py measure B L     # analysis vs the step's measured growth
    python tests/step_memory_worker.py plan MESH       # 1558M-wide, 2, 3 and 4 blocks, on MESH
    python tests/step_memory_worker.py plan-full MESH  # 1558M itself (48 blocks), on MESH

``plan`` is what the test runs: the figures grow by the same amount per block, so three
short compiles stand for the 48-block one (minutes on a CPU); ``plan-full`` compiles
that one, to check the extrapolation by hand (with XLA_FLAGS as the test sets them).
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from gpt2_jax.model.config import GPTConfig, settings_for_size
from gpt2_jax.model.gpt import GPTModel, init_params
from gpt2_jax.parallel.mesh import Placement, make_mesh
from gpt2_jax.training.optim import freeze, make_optimizer
from gpt2_jax.training.partition import Partition, resolve_trainable
from gpt2_jax.training.step_memory import step_memory
from gpt2_jax.training.train import Batch, Trainer

SMALL = {"n_vocab": 50257, "n_ctx": 256, "n_embd": 256, "n_head": 4, "n_layer": 4}


def status(field: str) -> int:
    """A ``/proc/self/status`` figure in bytes (VmRSS: now; VmHWM: the peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak() -> None:
    """Linux: make VmHWM (the peak resident size) start again from the current size."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(b: int, length: int) -> dict:
    """XLA's figures for the step of a small model, and how much the process's peak
    memory grows while that step runs once (everything else already in place)."""
    plan = step_memory(
        SMALL,
        "all",
        Placement(make_mesh("data=1")),
        batch_size=b,
        length=length,
        prefix_cache=False,
    )
    cfg = GPTConfig.from_settings(SMALL, num_classes=2)
    params = init_params(cfg, 0)
    partition = Partition.from_patterns(params, resolve_trainable(["all"], cfg.n_layers))
    tx = freeze(make_optimizer(1e-5, 0.1), partition.labels)
    trainer = Trainer(GPTModel(cfg), tx, np.ones(2), pool="last", seed=0)
    frozen = partition.frozen(params)
    state = trainer.init(partition.trainable(params), frozen)
    del params
    batch = Batch(
        jnp.zeros((b, length), jnp.int32),
        jnp.full((b,), length, jnp.int32),
        jnp.zeros((b,), jnp.int32),
    )
    step = trainer.train_step.lower(state, frozen, batch).compile()
    jax.block_until_ready((state, frozen, batch))
    reset_peak()  # earlier peaks (compiling, the plan) must not hide the step's own
    before = status("VmRSS")
    state, metrics = step(state, frozen, batch)
    jax.block_until_ready(metrics)
    return {
        "temporaries": plan.temporaries,
        "peak": plan.peak,
        "arguments": plan.arguments,
        "grew": status("VmHWM") - before,
    }


PLAN_BLOCKS = (2, 3, 4)  # the last block differs (it pools), so >= 2; 3 points check the growth


def plan_1558m(mesh: str, blocks=PLAN_BLOCKS) -> dict:
    """XLA's per-device figures of 1558M's training step (all layers trainable, batches
    of 16 x 1024) on ``mesh``, for 1558M's width with each number of ``blocks``."""
    settings = settings_for_size("1558M")
    out = {"devices": jax.device_count(), "mesh": mesh, "n_layer": settings["n_layer"]}
    for n in blocks:
        m = step_memory(
            {**settings, "n_layer": n},
            "all",
            Placement(make_mesh(mesh)),
            batch_size=16,
            length=1024,
        )
        out[str(n)] = {"arguments": m.arguments, "temporaries": m.temporaries, "peak": m.peak}
    return out


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "measure":
        result = measure(int(sys.argv[2]), int(sys.argv[3]))
    elif mode == "plan":
        result = plan_1558m(sys.argv[2])
    else:
        result = plan_1558m(sys.argv[2], blocks=(settings_for_size("1558M")["n_layer"],))
    print(json.dumps(result))
