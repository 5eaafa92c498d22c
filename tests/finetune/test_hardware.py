"""bfloat16 asked for on a CPU without bfloat16 units is said, once, where the run builds
its trainer; elsewhere nothing is said."""

import numpy as np
import pytest
from training_helpers import CFG, collected, tiny_data, tiny_partition

from gpt2_jax.finetune import job as job_module
from gpt2_jax.finetune.config import SpeedConfig
from gpt2_jax.finetune.job import TrainingJob, TrainingPlan, build_trainer
from gpt2_jax.model.gpt import GPTModel, init_params
from gpt2_jax.training.config import TrainConfig
from gpt2_jax.util import machine


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, seed=0)


def _said(params, speed: SpeedConfig) -> list[str]:
    data = {"train": tiny_data(1, 16), "test": tiny_data(2, 8)}
    plan = TrainingPlan(
        data, ("a", "b"), TrainConfig(batch_size=8), speed, "last", np.ones(2, np.float32)
    )
    lines: list[str] = []
    with collected(lines):
        build_trainer(TrainingJob(plan, GPTModel(CFG), tiny_partition(params)))
    return [line for line in lines if "bfloat16 units" in line]


@pytest.mark.parametrize("lacks", [True, False])
@pytest.mark.parametrize(
    "speed, flags",
    [
        (SpeedConfig(train_dtype="bfloat16"), "--train-dtype bfloat16"),
        (SpeedConfig(prefix_dtype="bfloat16"), "--prefix-dtype bfloat16"),
        (
            SpeedConfig(prefix_dtype="bfloat16", train_dtype="bfloat16"),
            "--prefix-dtype bfloat16 and --train-dtype bfloat16",
        ),
        (SpeedConfig(), None),
    ],
)
def test_bfloat16_without_units_is_said_once(params, monkeypatch, lacks, speed, flags):
    monkeypatch.setattr(job_module, "cpu_lacks_bfloat16", lambda: lacks)
    said = _said(params, speed)
    if lacks and flags:
        assert len(said) == 1
        assert said[0].startswith(f"WARNING: {flags}: this CPU has no bfloat16 units")
        assert "slower" in said[0]
    else:
        assert said == []


@pytest.mark.parametrize(
    "arch, flags, lacks",
    [
        ("x86_64", {"fpu", "avx2", "avx512f"}, True),
        ("x86_64", {"fpu", "avx512f", "avx512_bf16"}, False),
        ("x86_64", {"fpu", "amx_bf16", "amx_tile"}, False),
        ("x86_64", set(), False),  # flags unknown: nothing to say
        ("aarch64", {"fp", "asimd"}, False),  # not x86: its flags mean other things
    ],
)
def test_cpu_lacks_bfloat16_reads_the_x86_flags(monkeypatch, arch, flags, lacks):
    monkeypatch.setattr(machine.platform, "machine", lambda: arch)
    monkeypatch.setattr(machine, "_cpuinfo", lambda: ("a CPU", flags))
    assert machine.cpu_lacks_bfloat16() is lacks
    assert ("no bfloat16 units" in machine.machine_name()) is not bool(flags & machine.BF16_FLAGS)
