"""Memory of the compiled training step per device, from XLA's own analysis.

The step is lowered and compiled ahead of time on abstract shapes (``jax.ShapeDtypeStruct``
with the mesh's shardings): nothing is allocated, so a plan for 1558M on eight devices
can be made on a laptop with eight fake CPU devices. The figures are those of the
backend that compiles: on the CPU they are a CPU-compiled estimate for a GPU (another
compiler fuses differently, and GPUs use the fused attention). XLA reports, per device, the
bytes of the step's arguments (the trainable state, the frozen weights, the batch),
its outputs, the outputs that reuse donated arguments (the new state), and its
temporaries (activations kept for the backward pass, gradients, ...). The peak is
``arguments + outputs - aliased + temporaries``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gpt2_jax.model.config import GPTConfig
from gpt2_jax.model.gpt import GPTModel, param_shapes
from gpt2_jax.parallel.mesh import Placement, batch_sharding, replicated, tree_shardings
from gpt2_jax.training.optim import freeze, make_optimizer
from gpt2_jax.training.partition import Partition, merge, resolve_trainable
from gpt2_jax.training.train import Batch, Trainer, TrainState


@dataclass(frozen=True)
class StepMemory:
    """Bytes per device of one compiled training step."""

    arguments: int
    outputs: int
    aliased: int
    temporaries: int

    @property
    def peak(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries


def _abstract(tree, shardings):
    return jax.tree.map(
        lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), tree, shardings
    )


def step_memory(
    settings: dict,
    trainable: str,
    placement: Placement,
    *,
    batch_size: int,
    length: int,
    num_classes: int = 2,
    pool: str = "last",
    prefix_cache: bool = True,
) -> StepMemory:
    """Per-device memory of the training step of a ``settings``-sized GPT-2 classifier
    with the ``trainable`` preset (or patterns, comma-separated), for batches of
    ``batch_size`` x ``length`` on ``placement``'s mesh. ``prefix_cache``: the step
    starts at the first trainable block, as training does (its inputs are the frozen
    prefix's outputs)."""
    cfg = GPTConfig.from_settings(settings, num_classes=num_classes)
    shapes = param_shapes(cfg)
    patterns = resolve_trainable(trainable.split(","), cfg.n_layers)
    partition = Partition.from_patterns(shapes, patterns)
    start = partition.first_block(cfg.n_layers) if prefix_cache else 0
    trainer = Trainer(
        GPTModel(cfg),
        freeze(make_optimizer(1e-5, 0.1), partition.labels),
        np.ones(num_classes),
        pool=pool,
        seed=0,
        start=start,
        placement=placement,
    )
    mesh = placement.mesh
    trainable_abs, frozen_abs = partition.trainable(shapes), partition.frozen(shapes)
    opt_abs = jax.eval_shape(lambda t, f: trainer.tx.init(merge(t, f)), trainable_abs, frozen_abs)
    # an abstract state: lower() takes a shape and dtype in place of each array, so this
    # stands where TrainState.step holds a jax.Array
    step: Any = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated(mesh))
    state = TrainState(
        step,
        _abstract(trainable_abs, tree_shardings(mesh, trainable_abs)),
        _abstract(opt_abs, tree_shardings(mesh, opt_abs)),
    )
    frozen = _abstract(frozen_abs, tree_shardings(mesh, frozen_abs))
    x_shape = (batch_size, length) + ((cfg.emb_dim,) if start else ())
    x_type = jnp.float32 if start else jnp.int32
    batch = Batch(
        jax.ShapeDtypeStruct(x_shape, x_type, sharding=batch_sharding(mesh, len(x_shape))),
        jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=batch_sharding(mesh, 1)),
        jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=batch_sharding(mesh, 1)),
    )
    compiled = trainer.train_step.lower(state, frozen, batch).compile()
    stats = compiled.memory_analysis()
    if stats is None:  # jax returns None where the backend does not implement it
        raise RuntimeError("XLA gives no memory analysis of compiled programs on this backend")
    return StepMemory(
        int(stats.argument_size_in_bytes),
        int(stats.output_size_in_bytes),
        int(stats.alias_size_in_bytes),
        int(stats.temp_size_in_bytes),
    )
