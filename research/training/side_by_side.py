"""M members under one vmapped chunk: how a group of runs is laid out and how its chunk runs.

The one mechanism behind every side-by-side trainer: `loop.train_runs` (runs that differ in seed
and optimizer scalars, one batch schedule each, one shared dataset) and `multi_seed` (Table 1's
members, one dataset each, one shared batch schedule). A group of one is trained as is, without
`vmap`; a stacked group carries every state leaf, and whatever else is per member, on a leading
member axis M.

The chunk is jitted with its shardings declared, as big_vision declares them: state, dataset and
metrics replicated over the mesh, batch indices split along the mesh's `data` axis, the state
donated. On a mesh of one device that is plain single-device training.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from research.training.parallel import batch_sharded, replicate, replicated
from research.training.step import Batch, Metrics, TrainState, make_train_chunk


class Group:
  """The layout of `members` runs: one as is, or several stacked on a leading member axis.

  `per_member_data`: each member trains on its own dataset (stacked [M, N, ...]); else all share
  one. `shared_indices`: all members follow one batch schedule ([J, B]); else each its own
  ([M, J, B]). `stacked` defaults to members > 1; a group of one may be stacked (M = 1) to run
  the same program as a larger group.
  """

  def __init__(
    self,
    members: int,
    mesh: Mesh,
    *,
    stacked: bool | None = None,
    per_member_data: bool = False,
    shared_indices: bool = False,
  ):
    self.members, self.mesh = members, mesh
    self.stacked = members > 1 if stacked is None else stacked
    if not self.stacked and members != 1:
      raise ValueError("several members must be stacked")
    self._data_axis = 0 if self.stacked and per_member_data else None
    self._indices_axis = 0 if self.stacked and not shared_indices else None
    batch_axis = 1 if self._indices_axis is None else 2  # indices are [J, B] or [M, J, B]
    self.indices_sharding = batch_sharded(mesh, batch_axis=batch_axis)

  def stack(self, trees: Sequence[Any]) -> Any:
    """The members' trees (states, datasets) as one, replicated over the mesh."""
    if not self.stacked:
      return replicate(trees[0], self.mesh)
    return replicate(jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees), self.mesh)

  def member(self, tree: Any, i: int) -> Any:
    """Member i's slice of a stacked tree (a state, or a chunk's metrics)."""
    return jax.tree.map(lambda a: a[i], tree) if self.stacked else tree

  def indices(self, chunks: Sequence[np.ndarray]) -> jax.Array:
    """[J, B] batch indices, or [M, J, B] when each member follows its own batch schedule."""
    shared = not self.stacked or self._indices_axis is None
    return jax.device_put(chunks[0] if shared else np.stack(chunks), self.indices_sharding)

  def over_members(self, fn: Callable, in_axes: tuple) -> Callable:
    """`fn` mapped over the member axis where the group is stacked (`in_axes` as for vmap)."""
    return jax.vmap(fn, in_axes=in_axes) if self.stacked else fn

  def jit_chunk(self, train_step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]]):
    """The group's train chunk `(state, x_all, y_all, indices) -> (state, metrics)`, jitted with
    its shardings declared and the state donated."""
    chunk = make_train_chunk(train_step)
    data = self._data_axis
    chunk = self.over_members(chunk, (0, data, data, self._indices_axis))
    everywhere = replicated(self.mesh)
    return jax.jit(
      chunk,
      in_shardings=(everywhere, everywhere, everywhere, self.indices_sharding),
      out_shardings=everywhere,
      donate_argnums=0,
    )


class Chunks:
  """The group's train chunk over one device-resident training set, compiled once per chunk
  length (log_every, a shorter last chunk, profiling's 1) and timed apart from its compile."""

  def __init__(self, group: Group, train_step: Callable, x_train: jax.Array, y_train: jax.Array):
    self._fn = group.jit_chunk(train_step)
    self._compiled: dict[int, Any] = {}
    self.x_train, self.y_train = x_train, y_train

  def compile(self, state: TrainState, indices: jax.Array) -> float:
    """Compiles the chunk for these indices' length unless done; returns the seconds it took."""
    k = indices.shape[-2]
    if k in self._compiled:
      return 0.0
    t = time.perf_counter()
    self._compiled[k] = self._fn.lower(state, self.x_train, self.y_train, indices).compile()
    return time.perf_counter() - t

  def __call__(self, state: TrainState, indices: jax.Array) -> tuple[TrainState, dict, float]:
    """(new state, the chunk's metrics on the host, seconds); blocks until the chunk is done."""
    self.compile(state, indices)
    t = time.perf_counter()
    state, metrics = self._compiled[indices.shape[-2]](state, self.x_train, self.y_train, indices)
    metrics = jax.device_get(metrics)
    return state, metrics, time.perf_counter() - t
