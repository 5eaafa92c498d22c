"""Where arrays live: the device mesh, and how parameters and batches are laid on it.

The mesh has two axes:

* ``data``: each device of the axis gets its own rows of every batch;
* ``fsdp``: the large parameter leaves (and their gradients and optimizer state,
  frozen leaves too) are cut into equal pieces along one dimension, one piece per
  device of the axis; the rows of a batch are split over this axis as well, so every
  device computes on different examples and XLA gathers each layer's weights when it
  is needed.

Which leaf is cut, and along which dimension, depends on its shape alone
(``leaf_spec``), so a parameter, its gradient and its Adam moments always agree. The
computation itself is the same jitted code as on one device: ``jax.jit`` follows the
shardings of its inputs, and the outputs are pinned to the same layout. A mesh of one
device is not used at all: that is today's single-device path, unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp")
BATCH_AXES = AXES  # rows of a batch are split over both axes
MESH_PAIRS = f"expected AXIS=N pairs with AXIS in {', '.join(AXES)}, e.g. data=4,fsdp=2"
MIN_SHARDED_ELEMENTS = 2**14  # smaller leaves (biases, norms) are copied to every device


def parse_mesh(text: str | None) -> dict[str, int]:
    """``"data=4,fsdp=2"`` -> ``{"data": 4, "fsdp": 2}``; axes not named are 1, except
    that an empty text means "every device on data" (``{}``)."""
    if not text:
        return {}
    sizes: dict[str, int] = {}
    for part in text.split(","):
        name, eq, value = part.strip().partition("=")
        if name not in AXES or not eq:
            raise ValueError(f"--mesh {text!r}: {MESH_PAIRS}")
        if name in sizes:
            raise ValueError(f"--mesh {text!r}: axis {name!r} given twice")
        try:
            sizes[name] = int(value)
        except ValueError:
            raise ValueError(f"--mesh {text!r}: {name}={value!r} is not a whole number") from None
        if sizes[name] < 1:
            raise ValueError(f"--mesh {text!r}: {name}={sizes[name]} must be at least 1")
    return sizes


def make_mesh(text: str | None = None, devices=None) -> Mesh:
    """The ``(data, fsdp)`` mesh of ``--mesh text`` over ``devices`` (default: every
    device of every process). Without ``text`` every device is on ``data``; sizes that
    multiply to fewer devices use the first ones (in a run of several processes they
    must use them all)."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = parse_mesh(text)
    if not sizes:
        sizes = {"data": len(devices)}
    shape = tuple(sizes.get(axis, 1) for axis in AXES)
    n = math.prod(shape)
    if n > len(devices) or (n < len(devices) and jax.process_count() > 1):
        platform = devices[0].platform
        hint = (
            f"; on a CPU, --xla_force_host_platform_device_count={n} added to XLA_FLAGS "
            "before JAX starts makes that many devices (they share its cores)"
            if platform == "cpu" and n > len(devices)
            else ""
        )
        raise ValueError(
            f"--mesh {text}: needs {n} devices, but there are {len(devices)} "
            f"({platform}); make the sizes multiply to {len(devices)}"
            + (" or fewer" if jax.process_count() == 1 else "")
            + hint
        )
    return Mesh(np.array(devices[:n]).reshape(shape), AXES)


def describe(mesh: Mesh) -> str:
    sizes = ", ".join(f"{axis}={mesh.shape[axis]}" for axis in AXES)
    return f"{sizes} over {mesh.size} {mesh.devices.flat[0].platform} device(s)"


def leaf_spec(shape: tuple[int, ...], fsdp: int) -> P:
    """The partition of a parameter-like leaf of ``shape``: cut along its largest
    dimension that ``fsdp`` divides, if it has at least ``MIN_SHARDED_ELEMENTS``
    elements; else whole on every device."""
    if fsdp == 1 or math.prod(shape) < MIN_SHARDED_ELEMENTS:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            return P(*[("fsdp" if d == dim else None) for d in range(len(shape))])
    return P()


def tree_shardings(mesh: Mesh, tree):
    """A ``NamedSharding`` for every leaf of ``tree`` (arrays or ShapeDtypeStructs)."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(lambda leaf: NamedSharding(mesh, leaf_spec(tuple(leaf.shape), fsdp)), tree)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Rows over every device, the other dimensions whole."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


@dataclass(frozen=True)
class Placement:
    """Puts trees and batches on a mesh; ``rows`` must divide every batch."""

    mesh: Mesh

    @property
    def rows(self) -> int:
        """How many devices share a batch's rows (a batch must be a multiple of it)."""
        return self.mesh.size

    def tree(self, tree):
        return jax.device_put(tree, tree_shardings(self.mesh, tree))

    def batch(self, *arrays):
        """Host arrays with the batch's rows first -> global arrays, rows spread over the
        devices. In a run of several processes every process passes the whole batch and
        hands over only the rows its own devices hold."""
        out = []
        for a in arrays:
            a = np.asarray(a)
            if a.shape[0] % self.rows:
                raise ValueError(
                    f"a batch of {a.shape[0]} rows cannot be split over "
                    f"{self.rows} devices; use a batch size that is a multiple "
                    f"of {self.rows}"
                )
            sharding = batch_sharding(self.mesh, a.ndim)
            if jax.process_count() == 1:
                out.append(jax.device_put(a, sharding))
            else:
                out.append(jax.make_array_from_callback(a.shape, sharding, lambda i, a=a: a[i]))
        return out


def to_host(x) -> np.ndarray:
    """The whole of a (possibly sharded) array as NumPy, in every process."""
    if jax.process_count() == 1 or getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def host_tree(tree):
    """Every leaf of ``tree`` whole as NumPy, in every process (one transfer when there
    is a single process; a gather per sharded leaf otherwise, which every process must
    join)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return jax.tree.map(to_host, tree)
