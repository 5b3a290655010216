"""What every inference engine offers the serving path and the benchmarks, whatever runs the math.

An engine loads or compiles its model once, in its constructor, for a fixed set of batch sizes;
then `logits(x)` answers any number of examples and never compiles again (`compile_count` stays
put). `timing_calls` gives the benchmarks the engine's own floors, so every engine is timed by
the same harness: the bare call (numpy in, numpy out) and compute alone (engine-resident input,
blocking, nothing fetched).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from research.serving import InferenceError

DEFAULT_BATCH_SIZES = (1, 8, 64, 512)


class Engine:
  """Base of the engines: input checks and the outputs derived from `logits`.

  Subclasses set `engine` (its name), `backend`, `device_kind`, `precision`, `input_shape`,
  `batch_sizes` and `compile_seconds`, and implement `logits` and `timing_calls`.
  """

  engine: str = ""
  backend: str = "cpu"
  device_kind: str = ""
  precision: str = "float32"
  input_shape: tuple[int, ...] = ()
  batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
  compile_seconds: dict[int, float]
  model_bytes: int | None = None  # size of the artifact the engine serves, where there is one
  notes: str = ""  # how this engine got its model (export, quantization), for the reports

  @property
  def compile_count(self) -> int:
    return len(self.compile_seconds)

  def padded_size(self, n: int) -> int:
    """The batch size that `n` examples run at (n > largest: the largest, repeated)."""
    for b in self.batch_sizes:
      if b >= n:
        return b
    return self.batch_sizes[-1]

  def logits(self, x: np.ndarray) -> np.ndarray:
    raise NotImplementedError

  def timing_calls(self, x_host: np.ndarray) -> dict[str, Callable[[], Any]]:
    """{"floor": the bare call on host input, "compute": the call on engine-resident input}.

    `x_host` is float32 [b, *input_shape] with b one of `batch_sizes`.
    """
    raise NotImplementedError

  def probabilities(self, x: np.ndarray) -> np.ndarray:
    """Softmax of the checked logits (`checked_logits`): an answer, never NaN."""
    z = self.checked_logits(x)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)

  def predict(self, x: np.ndarray) -> np.ndarray:
    """Class labels from the checked logits: never the argmax of a NaN row."""
    return np.argmax(self.checked_logits(x), axis=-1).astype(np.int32)

  def checked_logits(self, x: np.ndarray) -> np.ndarray:
    """`logits`, or an InferenceError naming the input rows whose logits are NaN or inf.

    Finite inputs can still overflow the model (values of 3e37 give inf activations, and then
    NaN logits); an answer drawn from them (argmax 0, probabilities NaN) would be wrong, so the
    paths that answer (`predict`, `probabilities`) check every engine's logits. The timed paths
    call `logits` directly.
    """
    z = self.logits(x)
    return check_logits(z, x)

  def check_input(self, x: Any) -> np.ndarray:
    """float32 [n, *input_shape], or an InferenceError naming what is wrong and how to fix it."""
    return check_features(x, self.input_shape)


def check_batch_sizes(batch_sizes: Sequence[int]) -> tuple[int, ...]:
  if not batch_sizes or min(batch_sizes) < 1:
    raise InferenceError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
  return tuple(sorted(set(int(b) for b in batch_sizes)))


def check_features(x: Any, input_shape: Sequence[int]) -> np.ndarray:
  """float32 [n, *input_shape] from `x` (one example may come without its batch axis)."""
  input_shape = tuple(input_shape)
  x = np.asarray(x)
  if x.dtype.kind not in "fiu":
    raise InferenceError(
      f"input dtype {x.dtype} is not numeric; give float (or integer) "
      f"features of shape [n, {', '.join(map(str, input_shape))}]"
    )
  given = x.shape  # what the user gave: the message names it, not the batched view
  if x.ndim == len(input_shape):
    x = x[None]  # one example without its batch axis
  if x.shape[1:] != input_shape:
    raise InferenceError(
      f"input shape {list(given)} does not match the model's "
      f"[n, {', '.join(map(str, input_shape))}]; reshape or pick the "
      f"run trained on this data"
    )
  if len(x) == 0:
    raise InferenceError("input holds no examples; give at least one row")
  x = x.astype(np.float32, copy=False)
  with np.errstate(over="ignore", invalid="ignore"):  # a sum past 3e38 is inf, and says so
    total = x.sum()
  # One float32 sum says "all finite" (1.3 µs for one MNIST-1D example, against 4.4 µs for a
  # float64 sum and 3.7 µs for isfinite().all(), on the batch-1 serving path of every engine);
  # a non-finite sum (inf or NaN inside, or finite values past 3e38) pays for the elementwise test.
  if not math.isfinite(total) and not np.isfinite(x).all():
    bad = int(np.argmax(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
    raise InferenceError(f"input row {bad} holds NaN or inf; clean or drop it")
  return x


def check_logits(logits: np.ndarray, x: Any) -> np.ndarray:
  """`logits` when every row is finite; else an InferenceError naming the rows of `x` that gave
  NaN or inf (the first few, and how many), and the largest |value| among their inputs."""
  logits = np.asarray(logits)
  with np.errstate(over="ignore", invalid="ignore"):
    if math.isfinite(logits.sum()):  # the common case: one reduction
      return logits
  bad = np.flatnonzero(~np.isfinite(logits.reshape(len(logits), -1)).all(axis=1))
  if not len(bad):
    return logits  # finite logits whose sum overflowed
  rows = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
  x = np.asarray(x, np.float64).reshape(len(logits), -1)
  largest = float(np.abs(x[bad]).max())
  raise InferenceError(
    f"the model's logits are NaN or inf for {len(bad)} of {len(logits)} input rows "
    f"(row{'s' if len(bad) > 1 else ''} {rows}, counting from 0; inputs up to |x| = "
    f"{largest:.3g}): the values overflow the model; scale them as its training data was, or "
    f"drop those rows"
  )
