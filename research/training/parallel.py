"""Data parallelism, declared: one mesh axis `data`; the batch split along it, the rest replicated.

The train step itself is unchanged: given a replicated state and a batch sharded over `data`, XLA's
partitioner splits the forward and backward passes by example and inserts the all-reduce of the
gradients. The same code runs on one device (a mesh of one) and on many. Axes are `Auto`: with
jax 0.10's default `Explicit` axes, a state committed to one device fails inside a sharded jit.

Multi-host: call `jax.distributed.initialize()` on every host before any other JAX work (see
README); `jax.devices()` then lists every host's devices and the same mesh spans them.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


class ParallelError(ValueError):
  """A device count or batch size that cannot be split as asked."""


def data_mesh(num_devices: int = 0, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (0: all of them)."""
  devices = list(jax.devices() if devices is None else devices)
  if num_devices < 0 or num_devices > len(devices):
    raise ParallelError(
      f"num_devices={num_devices} but {len(devices)} device(s) are visible; "
      f"use 0 (all) or a number up to {len(devices)}"
    )
  chosen = devices[: num_devices or len(devices)]
  return Mesh(np.array(chosen), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  """Splits axis `batch_axis` over the mesh's devices."""
  return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def check_batch(mesh: Mesh, batch_size: int) -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ParallelError(
      f"batch_size {batch_size} does not split over {n} devices; "
      f"use a multiple of {n} or set num_devices"
    )


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Every leaf on every device of the mesh (params, optimizer state, the dataset)."""
  return jax.device_put(tree, replicated(mesh))
