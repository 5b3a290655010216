"""The inference engines, by name, behind one interface (`research.serving.engine.Engine`).

  jax               the jitted `apply` on any backend JAX sees; fp32, bf16, int8 weight-only
  onnxruntime       the ONNX export (jax2onnx) in ONNX Runtime's CPU session, fp32
  onnxruntime-int8  the same export quantized by ONNX Runtime (static QDQ, else dynamic)
  iree              the StableHLO compiled ahead of time by IREE for this CPU, its runtime's
                    local-sync driver (one thread); fp32 (the edge path: scripts/edge.py)

An `EngineFactory` builds them for one trained run, exporting and quantizing once however many
engines it makes. An exporter that cannot handle the model raises `ExportError` with its reason,
which the benchmarks record as "engine not available for this model".
"""

from __future__ import annotations

import importlib.util
from typing import Sequence

import jax
import numpy as np

from research.serving import InferenceError
from research.serving.engine import DEFAULT_BATCH_SIZES, Engine
from research.serving.restore import TrainedRun

ENGINES = ("jax", "onnxruntime", "onnxruntime-int8", "iree")
# The precision each engine computes in when none is asked for, and the only one ONNX engines have.
ENGINE_PRECISION = {
  "jax": "float32",
  "onnxruntime": "float32",
  "onnxruntime-int8": "int8",
  "iree": "float32",
}
# The packages each engine needs beyond jax (all in pyproject's dependencies).
ENGINE_MODULES = {
  "jax": (),
  "onnxruntime": ("onnxruntime", "jax2onnx", "onnx"),
  "onnxruntime-int8": ("onnxruntime", "jax2onnx", "onnx"),
  "iree": ("iree.compiler", "iree.runtime"),
}


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:  # a dotted name whose parent package is missing
    return False


def available_engines() -> list[str]:
  """`jax`, plus each engine whose packages are installed."""
  return [e for e in ENGINES if all(_installed(m) for m in ENGINE_MODULES[e])]


def check_engines(names: Sequence[str]) -> tuple[str, ...]:
  unknown = [n for n in names if n not in ENGINES]
  if unknown:
    raise InferenceError(
      f"unknown engine(s) {', '.join(unknown)}; choose from: {', '.join(ENGINES)}"
    )
  missing = [n for n in names if n not in available_engines()]
  if missing:
    needed = sorted({m.split(".")[0] for n in missing for m in ENGINE_MODULES[n]})
    raise InferenceError(
      f"engine(s) {', '.join(missing)} need {', '.join(needed)}; pip install -e . installs them"
    )
  return tuple(dict.fromkeys(names))


class EngineFactory:
  """Builds engines for one run; the ONNX export and its int8 quantization are made once."""

  def __init__(self, run: TrainedRun, calibration_x: np.ndarray | None = None):
    self.run = run
    self.calibration_x = calibration_x
    self._onnx: bytes | None = None
    self._int8: tuple[bytes, str] | None = None
    self.export_seconds: dict[str, float] = {}

  def onnx_model(self) -> bytes:
    if self._onnx is None:
      import time

      from research.serving.export import export_onnx

      t = time.perf_counter()
      self._onnx = export_onnx(self.run.model, self.run.params, self.run.input_shape)
      self.export_seconds["onnx"] = time.perf_counter() - t
    return self._onnx

  def int8_model(self) -> tuple[bytes, str]:
    if self._int8 is None:
      import time

      from research.serving.onnx_runtime import CALIBRATION_EXAMPLES, quantize_int8

      if self.calibration_x is None:
        raise InferenceError("onnxruntime-int8 needs calibration examples; pass calibration_x")
      model = self.onnx_model()
      t = time.perf_counter()
      self._int8 = quantize_int8(model, self.calibration_x[:CALIBRATION_EXAMPLES])
      self.export_seconds["int8"] = time.perf_counter() - t
    return self._int8

  def make(
    self,
    engine: str,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    precision: str | None = None,
    device: jax.Device | None = None,
  ) -> Engine:
    """Engine `engine` serving the run at `batch_sizes` (jax: on `device`, in `precision`)."""
    check_engines([engine])
    if engine == "jax":
      from research.serving.predictor import Predictor

      return Predictor.from_run(
        self.run, batch_sizes=batch_sizes, precision=precision or "float32", device=device
      )
    if precision not in (None, ENGINE_PRECISION[engine]):
      raise InferenceError(
        f"engine {engine} computes in {ENGINE_PRECISION[engine]} only, not {precision}"
      )
    if engine == "iree":
      from research.serving.iree import IreeEngine

      return IreeEngine.from_model(
        self.run.model, self.run.params, self.run.input_shape, batch_sizes
      )
    from research.serving.onnx_runtime import OnnxRuntimeEngine

    if engine == "onnxruntime":
      return OnnxRuntimeEngine(
        self.onnx_model(),
        self.run.input_shape,
        batch_sizes,
        notes="exported with jax2onnx (XLA's own conv and dot), simplified by serving/onnx_passes",
      )
    model, how = self.int8_model()
    return OnnxRuntimeEngine(
      model, self.run.input_shape, batch_sizes, precision="int8", engine=engine, notes=how
    )
