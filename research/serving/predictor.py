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

from research.models import for_platform, tree_bytes
from research.serving import InferenceError
from research.serving.engine import DEFAULT_BATCH_SIZES, Engine, check_batch_sizes
from research.serving.quantize import PRECISIONS, cast_params, dequantize
from research.serving.restore import TrainedRun

CONSTANT_PARAMS_MAX_BYTES = 16 * 2**20  # larger models keep params as arguments


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

  Params up to `CONSTANT_PARAMS_MAX_BYTES` are compiled into the executables as constants (not
  for int8, whose point is weights stored small), so XLA folds the work that depends on weights
  alone (the kernels' reshapes, transposes and padding) at compile time instead of in every call.
  Measured on the MNIST-1D CNN at batch 1, one core, the two alternating in one process
  (results/inference/cnn_batch1_path.md): 15 XLA ops per call with params as arguments, 12 as
  constants, and the compute-only p50 47.7 -> 37.5 µs.
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
    params_as_constants: bool | None = None,
  ):
    self.batch_sizes = check_batch_sizes(batch_sizes)
    self.device = device or jax.devices()[0]
    self.backend = self.device.platform
    self.device_kind = self.device.device_kind
    self.precision = precision
    self.input_shape = tuple(int(d) for d in input_shape)
    self.params = jax.device_put(cast_params(params, precision), self.device)
    # Kernels for the device that serves, whatever backend is JAX's default.
    apply = make_apply(for_platform(model, self.device.platform), precision)
    self.apply = jax.jit(apply)
    if params_as_constants is None:
      params_as_constants = precision != "int8" and tree_bytes(params) <= CONSTANT_PARAMS_MAX_BYTES
    self.params_as_constants = bool(params_as_constants)
    self.notes = "params compiled in as constants" if self.params_as_constants else ""
    with_params = jax.jit(lambda x: apply(self.params, x))
    self.compiled: dict[int, Any] = {}
    self._calls: dict[int, Any] = {}  # batch size -> x -> logits (device array)
    self.compile_seconds: dict[int, float] = {}
    for b in self.batch_sizes:
      t = time.perf_counter()
      x = jax.ShapeDtypeStruct(
        (b, *self.input_shape), jnp.float32, sharding=jax.sharding.SingleDeviceSharding(self.device)
      )
      if self.params_as_constants:
        self.compiled[b] = self._calls[b] = with_params.lower(x).compile()
      else:
        compiled = self.compiled[b] = self.apply.lower(self.params, x).compile()
        self._calls[b] = lambda x, compiled=compiled: compiled(self.params, x)
      self.compile_seconds[b] = time.perf_counter() - t

  @classmethod
  def from_run(cls, run: TrainedRun, **kwargs) -> "Predictor":
    return cls(run.model, run.params, run.input_shape, **kwargs)

  def logits(self, x: np.ndarray) -> np.ndarray:
    """float32 logits for a checked [n, *input_shape] array."""
    x = self.check_input(x)
    n, largest = len(x), self.batch_sizes[-1]
    call = self._calls.get(n)
    if call is not None:  # the real-time path: no padding, no slicing
      return np.asarray(call(x))
    if n <= largest:
      return self._run_padded(x)
    return np.concatenate([self._run_padded(x[i : i + largest]) for i in range(0, n, largest)])

  def _run_padded(self, x: np.ndarray) -> np.ndarray:
    n = len(x)
    b = self.padded_size(n)
    if b != n:
      x = np.concatenate([x, np.zeros((b - n, *self.input_shape), np.float32)])
    return np.asarray(self._calls[b](x))[:n]

  def timing_calls(self, x_host: np.ndarray) -> dict[str, Any]:
    call = self._calls[len(x_host)]
    x_dev = jax.device_put(x_host, self.device)
    return {
      "floor": lambda: np.asarray(call(x_host)),
      "compute": lambda: call(x_dev).block_until_ready(),
    }
