"""What the inference benchmark measures: its settings, checked before any work, and the
(engine, backend, precision) configurations they select."""

from __future__ import annotations

import dataclasses
import os

import jax

from research.serving import InferenceError
from research.serving.engines import ENGINE_PRECISION, available_engines, check_engines
from research.serving.quantize import PRECISIONS


@dataclasses.dataclass
class BenchSettings:
  precisions: tuple[str, ...] = PRECISIONS  # of the jax engine; ONNX engines have one each
  backends: tuple[str, ...] | None = None  # of the jax engine; None: every backend JAX sees
  engines: tuple[str, ...] | None = None  # None: every engine installed (serving.engines)
  peers: tuple[str, ...] = ()  # ONNX files of independent deployments, timed in ONNX Runtime
  sweep_sizes: tuple[int, ...] = tuple(2**i for i in range(13))  # 1 ... 4096
  serve_sizes: tuple[int, ...] = (1, 4, 16, 64, 256)  # compiled for serving and LoadGen
  latency_calls: int = 2000
  seconds_per_size: float = 0.25
  saturation_fraction: float = 0.9
  loadgen: bool = True
  loadgen_duration_ms: int = 1500
  latency_bound_ms: float = 10.0
  server_max_runs: int = 7
  full_length: bool = False
  profile: bool = False  # a jax.profiler trace of jax-engine inference, after the timings


def available_backends() -> list[str]:
  """'cpu', plus 'gpu' / 'tpu' when JAX has them."""
  found = []
  for name in ("cpu", "gpu", "tpu"):
    try:
      if jax.devices(name):
        found.append(name)
    except RuntimeError:
      pass
  return found


def configurations(settings: BenchSettings) -> list[tuple[str, str, str]]:
  """(engine, backend, precision) in the order they are measured: jax on every backend and
  precision, then each ONNX engine (CPU, its one precision)."""
  backends = settings.backends or tuple(available_backends())
  for b in backends:
    if b not in available_backends():
      raise InferenceError(
        f"backend {b!r} is not available here (have: "
        f"{', '.join(available_backends())}); drop it from --backends"
      )
  engines = check_engines(settings.engines or available_engines())
  out = []
  for engine in engines:
    if engine == "jax":
      out += [(engine, b, p) for b in backends for p in settings.precisions]
    else:
      out.append((engine, "cpu", ENGINE_PRECISION[engine]))
  for path in settings.peers:
    if not os.path.isfile(path):
      raise InferenceError(f"no peer ONNX file at {path}; check --peer-onnx")
    out.append((PEER_PREFIX + os.path.basename(path), "cpu", "float32"))
  return out


PEER_PREFIX = "peer-"


def check_settings(settings: BenchSettings) -> None:
  """Every name and number of `settings`, before a run is restored or a file written."""
  unknown = [p for p in settings.precisions if p not in PRECISIONS]
  if unknown or not settings.precisions:
    raise InferenceError(f"unknown precision(s) {unknown}; choose from: {', '.join(PRECISIONS)}")
  sizes = min(settings.sweep_sizes + settings.serve_sizes, default=0)
  for name, value in (("batch sizes", sizes), ("--latency-calls", settings.latency_calls),
                      ("--loadgen-ms", settings.loadgen_duration_ms),
                      ("--latency-bound-ms", settings.latency_bound_ms),
                      ("--server-runs", settings.server_max_runs)):  # fmt: skip
    if not value > 0:
      raise InferenceError(f"{name} must be positive, got {value}")
  configurations(settings)  # engines, backends, peer files
