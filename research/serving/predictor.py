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
from research.serving.engine import DEFAULT_BATCH_SIZES, Engine, check_batch_sizes
from research.serving.quantize import PRECISIONS, cast_params, dequantize
from research.serving.restore import TrainedRun

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


class Predictor(Engine):
  """The `jax` engine: params on one device plus `apply` compiled for a few batch sizes.

  `logits(x)` takes any number of examples: it pads up to the smallest compiled size that holds
  them, or splits them into chunks of the largest. Every compilation happens in `__init__`;
  `compile_count` says how many there were, and stays put while serving.
  """

  engine = "jax"

  def __init__(
    self,
    model: Any,
    params: Any,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    precision: str = "float32",
    device: jax.Device | None = None,
  ):
    self.batch_sizes = check_batch_sizes(batch_sizes)
    self.device = device or jax.devices()[0]
    self.backend = self.device.platform
    self.device_kind = self.device.device_kind
    self.precision = precision
    self.input_shape = tuple(int(d) for d in input_shape)
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

  def timing_calls(self, x_host: np.ndarray) -> dict[str, Any]:
    compiled = self.compiled[len(x_host)]
    x_dev = jax.device_put(x_host, self.device)
    return {
      "floor": lambda: np.asarray(compiled(self.params, x_host)),
      "compute": lambda: compiled(self.params, x_dev).block_until_ready(),
    }
