"""Several processes, on one or many hosts, as one JAX runtime (``jax.distributed``).

Every process runs the same command; together they see every device of every host,
and the mesh (``gpt2_jax.parallel.mesh``) spans them all. Each process reads the data files
itself (they are small next to the model) and hands to its own devices only their
rows of each batch. Process 0 alone writes the run folder (``metrics.json``, plots,
the classifier); the epoch checkpoints are written by orbax with every process taking
part, as orbax's multi-host support requires, so the run folder must be on a file
system every host sees.

``initialize`` takes the coordinator (``HOST:PORT`` of process 0), the number of
processes and this process's index from flags, or leaves them to JAX, which reads
``JAX_COORDINATOR_ADDRESS`` and recognises SLURM, Open MPI and Kubernetes jobs. On
CPUs the processes talk through gloo.
"""

from __future__ import annotations

import jax


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: int = 300,
) -> None:
    """Join the distributed runtime (once per process, before any JAX computation)."""
    if jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout_s,
    )


def is_main() -> bool:
    """True in the process that writes files (process 0; the only one without
    ``jax.distributed``)."""
    return jax.process_index() == 0


def several() -> bool:
    return jax.process_count() > 1


def share_outcome(ok: bool, what: str) -> None:
    """Process 0 tells the others whether ``what`` (something only it does, such as
    preparing the run folder) worked; they raise if it did not, instead of waiting for
    it at the next collective. Every process calls this exactly once per step: process
    0 with its outcome (before re-raising its error), the others with ``True``."""
    if not several():
        return
    import numpy as np
    from jax.experimental import multihost_utils

    worked = bool(multihost_utils.broadcast_one_to_all(np.int32(ok if is_main() else 1)))
    if not worked and not is_main():
        raise RuntimeError(f"process 0 could not {what}; its log says why")
