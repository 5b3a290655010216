"""Inference: restore a run's params alone, and serve them through a jitted `apply`.

Nothing here touches the optimizer, gradients or the train step: `apply(params, x) -> logits` is
compiled on its own, ahead of time, for a fixed set of batch sizes. A `Predictor` pads an odd
batch up to the nearest compiled size (and splits one larger than the largest), so serving never
compiles a new shape mid-run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research.checkpoint import Checkpointer, CheckpointError, resolve_step
from research.models import build_model

PRECISIONS = ("float32", "bfloat16", "int8")
DEFAULT_BATCH_SIZES = (1, 8, 64, 512)


class InferenceError(ValueError):
  """Input a model cannot take (shape, dtype, empty, non-finite); the message says what to fix."""


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


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise CheckpointError(f"{workdir!r} holds no trained run (no config.json); train first: "
                          f"python scripts/train.py --workdir {workdir}")
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{path} is unreadable ({e}); re-run training into a new workdir"
                          ) from None


def data_spec(config: ml_collections.ConfigDict, meta: dict) -> tuple[tuple[int, ...], int]:
  """Input shape and class count, from the checkpoint's meta (or, for older runs, the data)."""
  spec = meta.get("data_spec")
  if spec:
    return tuple(spec["input_shape"]), int(spec["num_classes"])
  from research.data import load_dataset
  data = load_dataset(config.data)
  return data.input_shape, data.num_classes


def load_run(workdir: str, checkpoint: str | int = "latest",
             device: jax.Device | None = None) -> TrainedRun:
  """Restores the params of `checkpoint` ('latest', 'best' or a step) onto `device`.

  Only the `params` item of the checkpoint is read; the optimizer state stays on disk.
  """
  workdir = os.path.abspath(workdir)
  config = read_run_config(workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise CheckpointError(f"no checkpoint in {ckpt_dir}; train first "
                          f"(python scripts/train.py --workdir {workdir})")
  device = device or jax.devices()[0]
  with Checkpointer(ckpt_dir, read_only=True) as ckpt:
    step = resolve_step(ckpt, checkpoint)
    try:
      meta = ckpt.restore_meta(step)
    except Exception as e:
      raise CheckpointError(f"checkpoint step {step} in {ckpt_dir} has no readable meta "
                            f"({type(e).__name__}); delete that step or re-train") from None
    input_shape, num_classes = data_spec(config, meta)
    model = build_model(config.model, num_classes)
    input_dtype = (meta.get("data_spec") or {}).get("input_dtype", "float32")  # int32: tokens
    params_like = jax.eval_shape(model.init, jax.random.key(0),
                                 jnp.zeros((1, *input_shape), input_dtype))
    sharding = jax.sharding.SingleDeviceSharding(device)
    params_like = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), params_like)
    params = ckpt.restore_params(step, params_like)
  return TrainedRun(workdir, config, model, params, step, input_shape, num_classes)


# ----------------------------------------------------------------------------------------------
# Precision: what a cheaper inference costs in accuracy.

@flax.struct.dataclass
class Int8Weight:
  """Symmetric per-output-channel int8 weight: w ≈ q * scale (scale over the last axis)."""
  q: jax.Array
  scale: jax.Array

  def dequantize(self) -> jax.Array:
    return self.q.astype(jnp.float32) * self.scale


def quantize_int8(params: Any) -> Any:
  """Weight-only int8: every weight matrix (ndim >= 2) becomes `Int8Weight`; biases stay fp32."""
  def quantize(w):
    if w.ndim < 2:
      return w
    w = jnp.asarray(w, jnp.float32)
    amax = jnp.max(jnp.abs(w), axis=tuple(range(w.ndim - 1)), keepdims=True)
    scale = jnp.where(amax > 0, amax / 127.0, 1.0)
    return Int8Weight(jnp.clip(jnp.round(w / scale), -127, 127).astype(jnp.int8), scale)
  return jax.tree.map(quantize, params)


def dequantize(params: Any) -> Any:
  return jax.tree.map(lambda w: w.dequantize() if isinstance(w, Int8Weight) else w, params,
                      is_leaf=lambda w: isinstance(w, Int8Weight))


def cast_params(params: Any, precision: str) -> Any:
  """Params as stored for inference in `precision` (the model computes in the matching dtype)."""
  if precision == "float32":
    return params
  if precision == "bfloat16":
    return jax.tree.map(lambda w: w.astype(jnp.bfloat16), params)
  if precision == "int8":
    return quantize_int8(params)
  raise InferenceError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")


def make_apply(model: Any, precision: str = "float32"):
  """The inference function `apply(params, x) -> float32 logits`, not yet jitted.

  bf16 computes in bf16 (the model is rebuilt with that dtype); int8 dequantizes its weights to
  fp32 inside the call, so only storage and weight traffic shrink.
  """
  if precision not in PRECISIONS:
    raise InferenceError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
  if precision == "bfloat16" and hasattr(model, "dtype"):
    model = model.clone(dtype=jnp.bfloat16)

  def apply(params, x):
    if precision == "int8":
      params = dequantize(params)
    return model.apply(params, x).astype(jnp.float32)
  return apply


# ----------------------------------------------------------------------------------------------

class Predictor:
  """Params on one device plus `apply` compiled for a few batch sizes.

  `logits(x)` takes any number of examples: it pads up to the smallest compiled size that holds
  them, or splits them into chunks of the largest. Every compilation happens in `__init__`;
  `compile_count` says how many there were, and stays put while serving.
  """

  def __init__(self, model: Any, params: Any, input_shape: Sequence[int],
               batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, precision: str = "float32",
               device: jax.Device | None = None):
    if not batch_sizes or min(batch_sizes) < 1:
      raise InferenceError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    self.device = device or jax.devices()[0]
    self.precision = precision
    self.input_shape = tuple(int(d) for d in input_shape)
    self.batch_sizes = tuple(sorted(set(int(b) for b in batch_sizes)))
    self.params = jax.device_put(cast_params(params, precision), self.device)
    self.apply = jax.jit(make_apply(model, precision))
    self.compiled: dict[int, Any] = {}
    self.compile_seconds: dict[int, float] = {}
    for b in self.batch_sizes:
      t = time.perf_counter()
      x = jax.ShapeDtypeStruct((b, *self.input_shape), jnp.float32,
                               sharding=jax.sharding.SingleDeviceSharding(self.device))
      self.compiled[b] = self.apply.lower(self.params, x).compile()
      self.compile_seconds[b] = time.perf_counter() - t

  @classmethod
  def from_run(cls, run: TrainedRun, **kwargs) -> "Predictor":
    return cls(run.model, run.params, run.input_shape, **kwargs)

  @property
  def compile_count(self) -> int:
    return len(self.compiled)

  def padded_size(self, n: int) -> int:
    """The compiled batch size that `n` examples run at (n > largest: the largest, repeated)."""
    for b in self.batch_sizes:
      if b >= n:
        return b
    return self.batch_sizes[-1]

  def logits(self, x: np.ndarray) -> np.ndarray:
    """float32 logits for a checked [n, *input_shape] array."""
    x = self.check_input(x)
    n, largest = len(x), self.batch_sizes[-1]
    compiled = self.compiled.get(n)
    if compiled is not None:  # the real-time path: no padding, no slicing
      return np.asarray(compiled(self.params, x))
    if n <= largest:
      return self._run_padded(x)
    return np.concatenate([self._run_padded(x[i:i + largest]) for i in range(0, n, largest)])

  def _run_padded(self, x: np.ndarray) -> np.ndarray:
    n = len(x)
    b = self.padded_size(n)
    if b != n:
      x = np.concatenate([x, np.zeros((b - n, *self.input_shape), np.float32)])
    return np.asarray(self.compiled[b](self.params, x))[:n]

  def probabilities(self, x: np.ndarray) -> np.ndarray:
    z = self.logits(x)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)

  def predict(self, x: np.ndarray) -> np.ndarray:
    return np.argmax(self.logits(x), axis=-1).astype(np.int32)

  def check_input(self, x: Any) -> np.ndarray:
    """float32 [n, *input_shape], or an InferenceError naming what is wrong and how to fix it."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
      raise InferenceError(f"input dtype {x.dtype} is not numeric; give float (or integer) "
                           f"features of shape [n, {', '.join(map(str, self.input_shape))}]")
    if x.ndim == len(self.input_shape):
      x = x[None]  # one example without its batch axis
    if x.shape[1:] != self.input_shape:
      raise InferenceError(f"input shape {list(x.shape)} does not match the model's "
                           f"[n, {', '.join(map(str, self.input_shape))}]; reshape or pick the "
                           f"run trained on this data")
    if len(x) == 0:
      raise InferenceError("input holds no examples; give at least one row")
    x = x.astype(np.float32, copy=False)
    # One reduction says "all finite" cheaply; only a non-finite (or overflowing) sum pays for
    # the per-row search.
    if not np.isfinite(np.add.reduce(x, axis=None, dtype=np.float64)) and not np.isfinite(x).all():
      bad = int(np.argmax(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
      raise InferenceError(f"input row {bad} holds NaN or inf; clean or drop it")
    return x
