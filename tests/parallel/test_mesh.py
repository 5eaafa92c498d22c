"""Training over a device mesh (data and fsdp axes) gives what one device gives.

The multi-device runs happen in a process of their own with 8 CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``, set before JAX starts)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO
from jax.sharding import PartitionSpec as P

from gpt2_jax.parallel.mesh import leaf_spec, make_mesh, parse_mesh

EIGHT_CPUS = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}


def test_mesh_flag_is_read_and_checked():
    assert parse_mesh("") == {}
    assert parse_mesh("data=4,fsdp=2") == {"data": 4, "fsdp": 2}
    assert parse_mesh(" fsdp=8 ") == {"fsdp": 8}
    for bad, says in [
        ("model=2", "AXIS in data, fsdp"),
        ("data=two", "not a whole number"),
        ("data=0", "at least 1"),
        ("data=2,data=2", "given twice"),
        ("data", "AXIS=N"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_mesh(bad)
    assert make_mesh().size >= 1  # every device on data
    with pytest.raises(ValueError, match="needs 64 devices, but there are") as err:
        make_mesh("data=8,fsdp=8")
    if jax.devices()[0].platform == "cpu":  # how to make CPU devices
        assert "--xla_force_host_platform_device_count=64 added to XLA_FLAGS" in str(err.value)


def test_which_leaves_are_cut_and_along_which_dimension():
    assert leaf_spec((50257, 768), 8) == P(None, "fsdp")  # 50257 is odd: the next largest
    assert leaf_spec((768, 3072), 4) == P(None, "fsdp")
    assert leaf_spec((3072, 768), 4) == P("fsdp", None)
    assert leaf_spec((768,), 4) == P()  # small: copied to every device
    assert leaf_spec((768, 3072), 1) == P()
    assert leaf_spec((1001, 999), 2) == P()  # nothing divides


RUNS = [
    "none:cache",
    "none:plain",
    "data=2:cache",
    "fsdp=2:plain",
    "data=4:plain",
    "data=2,fsdp=2:cache",
    "fsdp=4:cache",
    "data=8:plain",
    "fsdp=8:cache",
    "data=2,fsdp=4:cache",
    "data=4,fsdp=2:plain",
]


@pytest.mark.slow
def test_every_mesh_trains_like_one_device(tiny_model_dir, tmp_path):
    from synthetic import write_sms_file

    data = write_sms_file(tmp_path / "SMSSpamCollection", n_ham=60, n_spam=20)
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "mesh_worker.py"),
            str(tiny_model_dir),
            str(data),
            str(tmp_path),
            *RUNS,
        ],
        cwd=REPO,
        env={**os.environ, **EIGHT_CPUS},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    def load(item):
        spec, cache = item.split(":")
        name = f"{spec.replace(',', '+').replace('=', '')}-{cache}"
        return (
            json.loads((tmp_path / f"{name}.json").read_text()),
            np.load(tmp_path / f"{name}.npz"),
        )

    for item in RUNS:
        spec, cache = item.split(":")
        report, leaves = load(item)
        base_report, base = load(f"none:{cache}")
        assert report["devices"] == 8
        assert len(report["history"]) == 2
        for ours, theirs in zip(report["history"], base_report["history"]):
            for key in ("train_step_loss", "train_step_accuracy"):
                assert ours[key] == pytest.approx(theirs[key], abs=1e-5), (item, key)
            for split in ("train", "val", "test"):
                assert ours[split]["loss"] == pytest.approx(theirs[split]["loss"], abs=1e-5)
                assert ours[split]["accuracy"] == theirs[split]["accuracy"], (item, split)
        assert sorted(leaves.files) == sorted(base.files)
        for name in base.files:
            np.testing.assert_allclose(
                leaves[name], base[name], atol=1e-5, rtol=0, err_msg=f"{item}: {name}"
            )
        used = set(report["devices_used"].values())
        sizes = parse_mesh("" if spec == "none" else spec)
        n = int(np.prod(list(sizes.values()))) if sizes else 1
        assert used == {n}, (item, used)  # the leaves live on the mesh's devices
        cut = [k for k, s in report["shardings"].items() if "fsdp" in s]
        if sizes.get("fsdp", 1) > 1:  # the big trained kernels are cut over fsdp
            assert "h1/mlp/c_fc/kernel" in cut and "h1/attn/c_attn/kernel" in cut, item
        else:
            assert cut == [], item
