"""The ONNX Runtime engines: the exported model in fp32, and ONNX Runtime's own int8 quantization.

ONNX Runtime takes any batch size (the exported batch dimension is symbolic), so nothing is
padded; each of `batch_sizes` is run once at load so that no first-call allocation lands in a
timed call. Threads are pinned like ours: `intra_op_num_threads` from the process's thread
setting, one inter-op thread, sequential execution, every graph optimization on.

int8 is static QDQ quantization calibrated on training examples (weights int8 per channel,
activations uint8; 7-bit weights on CPUs without VNNI, see `cpu_has_vnni`), which quantizes the
Conv and Gemm of a CNN; where static quantization fails
(a graph its calibrator cannot run), dynamic quantization (weights only, activations quantized
on the fly) is used instead, and `notes` says which and why.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Sequence

import numpy as np

from research.serving.engine import DEFAULT_BATCH_SIZES, Engine, check_batch_sizes
from research.serving.export import ExportError, one_line, read_model_file

CALIBRATION_EXAMPLES = 512


def default_threads() -> int:
  """ONNX Runtime's threads matching XLA's: one when `--threads 1` pinned XLA to one thread,
  else the CPUs this process may use."""
  from research.runtime import single_threaded

  if single_threaded():
    return 1
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


class OnnxRuntimeEngine(Engine):
  """An ONNX model served by an ONNX Runtime CPU session."""

  def __init__(
    self,
    model_proto: bytes,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    precision: str = "float32",
    threads: int | None = None,
    engine: str = "onnxruntime",
    notes: str = "",
    source: str = "the exported model",
  ):
    import onnxruntime as ort

    self.engine, self.precision, self.notes = engine, precision, notes
    self.input_shape = tuple(int(d) for d in input_shape)
    self.batch_sizes = check_batch_sizes(batch_sizes)
    self.model_bytes = len(model_proto)
    self.onnx_nodes = _node_count(model_proto)
    self.threads = int(threads or default_threads())
    options = ort.SessionOptions()
    options.intra_op_num_threads = self.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the exporter's unused constants are warnings
    t = time.perf_counter()
    try:
      self.session = ort.InferenceSession(model_proto, options, providers=["CPUExecutionProvider"])
    except Exception as e:
      raise ExportError(
        f"ONNX Runtime cannot load {source} ({one_line(e)}); re-export it with "
        f"scripts/export.py --format onnx"
      ) from None
    load_s = time.perf_counter() - t
    inputs = self.session.get_inputs()
    if len(inputs) != 1:
      raise ExportError(f"{source} takes {len(inputs)} inputs; a classifier export takes one")
    self.input_name = inputs[0].name
    declared = tuple(inputs[0].shape[1:])
    if any(isinstance(d, int) for d in declared) and declared != self.input_shape:
      raise ExportError(
        f"{source} takes inputs of shape [n, {', '.join(map(str, declared))}], the run "
        f"[n, {', '.join(map(str, self.input_shape))}]; export it from this run"
      )
    self.compile_seconds = {}
    for b in self.batch_sizes:  # first run of each shape: allocation and kernel selection
      t = time.perf_counter()
      self._run(np.zeros((b, *self.input_shape), np.float32))
      self.compile_seconds[b] = (load_s if b == self.batch_sizes[0] else 0.0) + (
        time.perf_counter() - t
      )
    self.backend, self.device_kind = "cpu", "ONNX Runtime CPUExecutionProvider"

  @classmethod
  def from_file(cls, path: str, input_shape: Sequence[int], **kwargs) -> "OnnxRuntimeEngine":
    return cls(read_model_file(path, "onnx"), input_shape, source=path, **kwargs)

  def _run(self, x: np.ndarray) -> np.ndarray:
    return self.session.run(None, {self.input_name: x})[0]

  def logits(self, x: np.ndarray) -> np.ndarray:
    x = self.check_input(x)
    largest = self.batch_sizes[-1]
    if len(x) <= largest:
      return self._run(x)
    return np.concatenate([self._run(x[i : i + largest]) for i in range(0, len(x), largest)])

  def timing_calls(self, x_host: np.ndarray) -> dict[str, Any]:
    import onnxruntime as ort

    x_host = np.ascontiguousarray(x_host, np.float32)
    binding = self.session.io_binding()
    binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(x_host))
    output = self.session.get_outputs()[0].name
    logits = self._run(x_host)
    binding.bind_ortvalue_output(output, ort.OrtValue.ortvalue_from_numpy(np.empty_like(logits)))
    return {
      "floor": lambda: self._run(x_host),
      "compute": lambda: self.session.run_with_iobinding(binding),
    }


def _node_count(model_proto: bytes) -> int | None:
  """Ops in the ONNX graph as exported (ONNX Runtime fuses some when it loads it)."""
  try:
    import onnx

    return len(onnx.load_from_string(model_proto).graph.node)
  except Exception:
    return None


def cpu_has_vnni() -> bool:
  """Whether this x86 CPU multiplies uint8 by int8 in VNNI instructions.

  Without VNNI, ONNX Runtime's uint8 x int8 kernels (AVX2 `vpmaddubsw`) saturate their 16-bit
  sums, so the weights are quantized to 7 bits instead (`reduce_range`). Measured on the MNIST-1D
  CNN on an AVX2 CPU without VNNI: fp32 93.0 % test accuracy, int8 87.3 % with full-range
  weights, 92.5 % with 7-bit weights.
  """
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((line for line in f if line.startswith("flags")), "")
  except OSError:
    return False
  return "vnni" in flags


def quantize_int8(
  model_proto: bytes, calibration_x: np.ndarray, input_name: str = "x"
) -> tuple[bytes, str]:
  """ONNX Runtime's int8 model of `model_proto` and how it was quantized.

  Static QDQ, calibrated (min-max) on `calibration_x`, after ONNX Runtime's pre-processing (shape
  inference, and fusions that fold the exporter's layout transposes into the Convs); dynamic
  where static fails.
  """
  from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
  )

  class _Reader(CalibrationDataReader):
    def __init__(self):
      self.rows = iter(np.array_split(calibration_x, max(1, len(calibration_x) // 64)))

    def get_next(self):
      rows = next(self.rows, None)
      return None if rows is None else {input_name: np.ascontiguousarray(rows, np.float32)}

  from onnxruntime.quantization.shape_inference import quant_pre_process

  reduce_range = not cpu_has_vnni()

  with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
    raw, fp32 = os.path.join(tmp, "raw.onnx"), os.path.join(tmp, "fp32.onnx")
    int8 = os.path.join(tmp, "int8.onnx")
    with open(raw, "wb") as f:
      f.write(model_proto)
    try:  # shape inference and graph fusions first, as ONNX Runtime advises
      # ONNX's shape inference only: ONNX Runtime's symbolic one writes its failures (the GRU's
      # Loop) into the working directory.
      quant_pre_process(raw, fp32, skip_symbolic_shape=True)
    except Exception:
      fp32 = raw
    try:
      quantize_static(
        fp32,
        int8,
        _Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=reduce_range,
      )
      how = (
        f"static QDQ (uint8 activations, int8 per-channel weights"
        f"{', 7-bit weight range: this CPU has no VNNI' if reduce_range else ''}), "
        f"calibrated on {len(calibration_x)} training examples"
      )
    except Exception as e:
      try:
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, reduce_range=reduce_range)
      except Exception as e2:
        raise ExportError(
          f"ONNX Runtime cannot quantize this model: static ({one_line(e)}), "
          f"dynamic ({one_line(e2)})"
        ) from None
      how = f"dynamic (static quantization failed: {one_line(e)})"
    with open(int8, "rb") as f:
      return f.read(), how
