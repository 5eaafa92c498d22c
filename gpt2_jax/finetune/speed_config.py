"""How a run's computation is organised (``SpeedConfig``): prefix cache, dtypes, buckets,
mesh, memory budget; each field is a flag. All exact except ``--prefix-dtype bfloat16``."""

from __future__ import annotations

import dataclasses
import math

from gpt2_jax.parallel.mesh import Placement, make_mesh, parse_mesh
from gpt2_jax.util.typed import check_field_types

field = dataclasses.field


def _budget(text: str) -> float | str:
    return text if text == "available" else float(text)


@dataclasses.dataclass(frozen=True)
class SpeedConfig:
    """How the computation is organised; all exact except --prefix-dtype bfloat16."""

    prefix_cache: bool = field(
        default=True,
        metadata={
            "flag": "--no-prefix-cache",
            "help": "recompute the frozen blocks every step (the "
            "book's way) instead of once per text",
        },
    )
    pooled_only: bool = field(
        default=True,
        metadata={
            "flag": "--full-logits",
            "help": "compute every position in the last block, not just the pooled one",
        },
    )
    buckets: bool = field(
        default=True,
        metadata={
            "flag": "--no-buckets",
            "help": "with a pool that reads only real tokens (last-real, "
            "first, mean), still pad every batch to the full length",
        },
    )
    prefix_dtype: str = field(
        default="float32",
        metadata={
            "choices": ["float32", "bfloat16"],
            "help": "matmul inputs of the frozen prefix (bfloat16: float32 accumulation)",
        },
    )
    train_dtype: str = field(
        default="float32",
        metadata={
            "choices": ["float32", "bfloat16"],
            "help": "matmul inputs of the trained blocks (bfloat16: float32 accumulation, and "
            "the weights, gradients and Adam state stay float32)",
        },
    )
    attention: str = field(
        default="auto",
        metadata={
            "choices": ["auto", "blocked", "fused"],
            "help": "how attention is computed: blocked (the CPU's fastest here), fused "
            "(jax.nn.dot_product_attention: cuDNN flash attention on GPUs), auto: fused on GPUs",
        },
    )
    prefix_cache_dir: str | None = field(
        default=None,
        metadata={
            "metavar": "DIR",
            "help": "keep the frozen-prefix outputs in DIR (2.8 GB for the "
            "lab's splits at 124M), keyed by weights, data and length, so a rerun skips that pass",
        },
    )
    prefix_storage: str = field(
        default="auto",
        metadata={
            "choices": ["auto", "memory", "disk"],
            "help": "where the frozen-prefix outputs live: disk = memory-mapped files in the run "
            "folder; auto = disk when the memory estimate exceeds --memory-budget-gib",
        },
    )
    mesh: str = field(
        default="",
        metadata={
            "metavar": "data=N,fsdp=M",
            "help": "lay training over the devices: batch rows split "
            "over data x fsdp, large weights (and their gradients and Adam state) cut over fsdp; "
            "the sizes multiply to the device count (default: every device on data; one device: "
            "no mesh at all)",
        },
    )
    memory_budget_gib: float | str = field(
        default="available",
        metadata={
            "parse": _budget,
            "metavar": "available|GIB",
            "help": "memory the run may use, for --prefix-storage auto",
        },
    )

    def __post_init__(self):
        check_field_types(self)
        parse_mesh(self.mesh)  # the flag's form; the devices are counted when the run starts
        budget = self.memory_budget_gib
        if budget != "available" and (
            isinstance(budget, str) or not (math.isfinite(budget) and budget > 0)
        ):
            raise ValueError(
                f"memory_budget_gib must be 'available' or a positive number of GiB, got {budget}"
            )

    def matmul_dtype(self) -> str | None:
        return None if self.prefix_dtype == "float32" else self.prefix_dtype

    def placement(self) -> Placement | None:
        """Where training runs: None on a single device (and no --mesh), else the mesh."""
        mesh = make_mesh(self.mesh)
        return None if mesh.size == 1 else Placement(mesh)
