"""Data parallelism, declared: one mesh axis `data`; the batch split along it, the rest replicated.

The train step itself is unchanged: given a replicated state and a batch sharded over `data`, XLA's
partitioner splits the forward and backward passes by example and inserts the all-reduce of the
gradients. The same code runs on one device (a mesh of one) and on many. Axes are `Auto`: with
jax 0.10's default `Explicit` axes, a state committed to one device fails inside a sharded jit.

Several processes (`scripts/train.py --distributed`, research/training/distributed.py): after
`jax.distributed.initialize`, `jax.devices()` lists every process's devices, and `num_devices`
counts them all: 0 takes every device; otherwise it must be a multiple of the process count and
the mesh takes as many from each process (every process must drive a part of the mesh, or its
host reads of the replicated state abort with "spans non-addressable devices"). The default 1
with several processes is an error naming the fix (`--config.num_devices=0`), not a silent
change: the config is what the run records and resumes against. 2 processes x 1 CPU device
train bitwise as 1 process x 2 devices (same mesh order, same gloo/in-process all-reduce result).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from research.errors import UserError

DATA_AXIS = "data"


class ParallelError(UserError, ValueError):
  """A device count or batch size that cannot be split as asked."""


def data_mesh(num_devices: int = 0, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `num_devices` devices (0: all of them), as many from each process."""
  chosen = choose_devices(num_devices, list(jax.devices() if devices is None else devices))
  return Mesh(np.array(chosen), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def choose_devices(num_devices: int, devices: Sequence[Any]) -> list[Any]:
  """The first `num_devices` devices (0: all); with several processes, the first
  `num_devices / processes` of each process's, in process order."""
  if num_devices < 0 or num_devices > len(devices):
    raise ParallelError(
      f"num_devices={num_devices} but {len(devices)} device(s) are visible; "
      f"use 0 (all) or a number up to {len(devices)}"
    )
  by_process: dict[int, list[Any]] = {}
  for d in devices:
    by_process.setdefault(d.process_index, []).append(d)
  if num_devices == 0 or len(by_process) == 1:
    return list(devices[: num_devices or len(devices)])
  processes = len(by_process)
  if num_devices % processes:
    raise ParallelError(
      f"num_devices={num_devices} cannot span {processes} processes evenly; pass "
      f"--config.num_devices=0 (all {len(devices)} devices) or a multiple of {processes}"
    )
  each = num_devices // processes
  if any(len(local) < each for local in by_process.values()):
    raise ParallelError(
      f"num_devices={num_devices} needs {each} devices on each of {processes} processes; some "
      "have fewer"
    )
  return [d for p in sorted(by_process) for d in by_process[p][:each]]


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
  """Every leaf on every device of the mesh (params, optimizer state, the dataset).

  With several processes, an array already placed on one process's device (a restored
  checkpoint) cannot be moved onto the other processes' devices ("does not support cross-host
  device transfers" on CPU): it goes through the host, and jax checks every process holds the
  same value.
  """
  sharding = replicated(mesh)
  if jax.process_count() > 1:
    tree = jax.tree.map(lambda x: _via_host(x, sharding), tree)
  return jax.device_put(tree, sharding)


def _via_host(x: Any, sharding: NamedSharding) -> Any:
  if isinstance(x, jax.Array) and x.is_fully_addressable and x.sharding != sharding:
    return np.asarray(x)
  return x
