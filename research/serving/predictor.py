"""Serving a trained model through a jitted `apply`, compiled ahead of time per batch size.

Nothing here touches the optimizer, gradients or the train step: `apply(params, x) -> logits` is
compiled on its own, ahead of time, for a fixed set of batch sizes. A `Predictor` pads an odd
batch up to the nearest compiled size (and splits one larger than the largest), so serving never
compiles a new shape mid-run.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.models import for_platform
from research.serving import InferenceError
from research.serving.quantize import PRECISIONS, cast_params, dequantize
from research.serving.restore import TrainedRun

DEFAULT_BATCH_SIZES = (1, 8, 64, 512)


# ----------------------------------------------------------------------------------------------
# Precision: what a cheaper inference costs in accuracy.


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

  def __init__(
    self,
    model: Any,
    params: Any,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    precision: str = "float32",
    device: jax.Device | None = None,
  ):
    if not batch_sizes or min(batch_sizes) < 1:
      raise InferenceError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    self.device = device or jax.devices()[0]
    self.precision = precision
    self.input_shape = tuple(int(d) for d in input_shape)
    self.batch_sizes = tuple(sorted(set(int(b) for b in batch_sizes)))
    self.params = jax.device_put(cast_params(params, precision), self.device)
    # Kernels for the device that serves, whatever backend is JAX's default.
    self.apply = jax.jit(make_apply(for_platform(model, self.device.platform), precision))
    self.compiled: dict[int, Any] = {}
    self.compile_seconds: dict[int, float] = {}
    for b in self.batch_sizes:
      t = time.perf_counter()
      x = jax.ShapeDtypeStruct(
        (b, *self.input_shape), jnp.float32, sharding=jax.sharding.SingleDeviceSharding(self.device)
      )
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
    return np.concatenate([self._run_padded(x[i : i + largest]) for i in range(0, n, largest)])

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
      raise InferenceError(
        f"input dtype {x.dtype} is not numeric; give float (or integer) "
        f"features of shape [n, {', '.join(map(str, self.input_shape))}]"
      )
    if x.ndim == len(self.input_shape):
      x = x[None]  # one example without its batch axis
    if x.shape[1:] != self.input_shape:
      raise InferenceError(
        f"input shape {list(x.shape)} does not match the model's "
        f"[n, {', '.join(map(str, self.input_shape))}]; reshape or pick the "
        f"run trained on this data"
      )
    if len(x) == 0:
      raise InferenceError("input holds no examples; give at least one row")
    x = x.astype(np.float32, copy=False)
    # One reduction says "all finite" cheaply; only a non-finite (or overflowing) sum pays for
    # the per-row search.
    if not np.isfinite(np.add.reduce(x, axis=None, dtype=np.float64)) and not np.isfinite(x).all():
      bad = int(np.argmax(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
      raise InferenceError(f"input row {bad} holds NaN or inf; clean or drop it")
    return x
