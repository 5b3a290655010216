"""Params-only restore: a run's config, its model and one checkpoint's params, never its optimizer.

The model is built for the platform of the device the params land on, so its kernels are the ones
`impl="auto"` picks there (research/kernels).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from research import workdir as workdir_lib
from research.checkpoint import Checkpointer, CheckpointError, resolve_step
from research.models import build_model


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """What inference needs from a workdir: the config, the model, one checkpoint's params."""

  workdir: str
  config: ml_collections.ConfigDict
  model: Any
  params: Any
  step: int
  input_shape: tuple[int, ...]
  num_classes: int


def data_spec(config: ml_collections.ConfigDict, meta: dict) -> tuple[tuple[int, ...], int]:
  """Input shape and class count, from the checkpoint's meta (or, for older runs, the data)."""
  spec = meta.get("data_spec")
  if spec:
    return tuple(spec["input_shape"]), int(spec["num_classes"])
  from research.data import load_dataset

  data = load_dataset(config.data)
  return data.input_shape, data.num_classes


def load_run(
  workdir: str, checkpoint: str | int = "latest", device: jax.Device | None = None
) -> TrainedRun:
  """Restores the params of `checkpoint` ('latest', 'best' or a step) onto `device`.

  Only the `params` item of the checkpoint is read; the optimizer state stays on disk.
  """
  workdir = os.path.abspath(workdir)
  config = workdir_lib.read_config(workdir)
  ckpt_dir = workdir_lib.checkpoint_dir(workdir)
  if not os.path.isdir(ckpt_dir):
    raise CheckpointError(
      f"no checkpoint in {ckpt_dir}; train first (python scripts/train.py --workdir {workdir})"
    )
  device = device or jax.devices()[0]
  with Checkpointer(ckpt_dir, read_only=True) as ckpt:
    step = resolve_step(ckpt, checkpoint)
    if step in ckpt.damaged:
      raise _damaged(ckpt, step, ckpt.damaged[step], None)
    try:
      meta = ckpt.restore_meta(step)
    except CheckpointError as e:
      raise _damaged(ckpt, step, e.reason, None) from None
    input_shape, num_classes = data_spec(config, meta)
    model = build_model(config.model, num_classes)
    input_dtype = (meta.get("data_spec") or {}).get("input_dtype", "float32")  # int32: tokens
    params_like = jax.eval_shape(
      model.init, jax.random.key(0), jnp.zeros((1, *input_shape), input_dtype)
    )
    sharding = jax.sharding.SingleDeviceSharding(device)
    params_like = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), params_like
    )
    try:
      params = ckpt.restore_params(step, params_like)
    except CheckpointError as e:
      raise _damaged(ckpt, step, e.reason, params_like) from None
  return TrainedRun(workdir, config, model, params, step, input_shape, num_classes)


def _damaged(ckpt: Checkpointer, step: int, why: str, params_like: Any) -> CheckpointError:
  """Names the damaged step and the steps that restore (all intact-looking ones when the params'
  shapes are unknown), with the flag that picks one."""
  good = (
    ckpt.restorable_steps(params_like, skip=step)
    if params_like is not None
    else [s for s in reversed(ckpt.all_steps()) if s != step]
  )
  where = f"checkpoint step {step} in {ckpt.directory} is damaged ({why})"
  if not good:
    return CheckpointError(
      f"{where} and no other step restores; re-train (python scripts/train.py sets damaged "
      f"steps aside and resumes from the newest good one)"
    )
  listed = ", ".join(map(str, good))
  return CheckpointError(f"{where}; restorable: {listed}; pass --checkpoint {good[0]}")
