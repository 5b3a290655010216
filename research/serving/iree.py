"""IREE: the model's StableHLO compiled ahead of time for one CPU, and served by IREE's runtime.

The edge path. `jax.export` gives StableHLO; IREE's compiler turns it into a `.vmfb` module for a
named CPU target (this host, a phone's Arm core, a RISC-V core); IREE's runtime, a small C
library with no Python or JAX in it, loads the module and calls `main`. The batch size is fixed
per module: IREE 3.13 cannot legalize the `dynamic_reshape` a symbolic batch leaves behind.

`IreeEngine` serves host modules behind the engine interface, on the `local-sync` driver (one
thread, work done inline in the call), so its timings compare with the other engines pinned to
one thread.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.models import for_platform
from research.serving.engine import DEFAULT_BATCH_SIZES, Engine, check_batch_sizes
from research.serving.export import EXPORT_PLATFORM, ExportError, inference_fn, read_model_file
from research.serving.quantize import cast_params, dequantize

# The platform the model's "auto" kernels are resolved for (`research.kernels.AUTO`).
PLATFORM = "iree"
DRIVER = "local-sync"
FUNCTION = "main"
PRECISIONS = ("float32", "int8")  # int8: weight-only, as the jax engine's int8


@dataclasses.dataclass(frozen=True)
class Target:
  """A CPU that IREE compiles for: LLVM's triple, CPU and features, and what it stands for."""

  name: str
  triple: str | None  # None: the host's own
  cpu: str
  features: str
  describes: str
  abi: str | None = None

  def compiler_flags(self) -> list[str]:
    flags = [f"--iree-llvmcpu-target-cpu={self.cpu}"]
    if self.triple:
      flags.append(f"--iree-llvmcpu-target-triple={self.triple}")
    if self.features:
      flags.append(f"--iree-llvmcpu-target-cpu-features={self.features}")
    if self.abi:
      flags.append(f"--iree-llvmcpu-target-abi={self.abi}")
    return flags


TARGETS: dict[str, Target] = {
  "host": Target("host", None, "host", "", "this machine's CPU, its features as detected"),
  "aarch64": Target(
    "aarch64",
    "aarch64-linux-android30",
    "cortex-a76",
    "+neon,+dotprod,+fullfp16",
    "a phone's big core: Arm Cortex-A76 (Armv8.2-A: NEON, int8 dot product, fp16), Android 11 "
    "(API 30) and later",
  ),
  "riscv64": Target(
    "riscv64",
    "riscv64-unknown-linux-gnu",
    "generic-rv64",
    "+m,+a,+f,+d,+c,+v",
    "a 64-bit RISC-V application core, RV64GC with the vector extension (RVV 1.0), Linux",
    abi="lp64d",
  ),
}


def check_target(name: str) -> Target:
  if name not in TARGETS:
    raise ExportError(f"unknown IREE target {name!r}; choose one of: {', '.join(TARGETS)}")
  return TARGETS[name]


def check_precision(precision: str) -> str:
  if precision not in PRECISIONS:
    raise ExportError(f"IREE modules come in {' or '.join(PRECISIONS)}, not {precision!r}")
  return precision


def compiler_version() -> str:
  """The IREE compiler's release and source revision, as recorded in every manifest."""
  import iree.compiler.version as v

  return f"{v.VERSION} ({v.REVISIONS.get('IREE', '?')[:12]})"


def stablehlo_text(
  model: Any, params: Any, input_shape: Sequence[int], batch: int, precision: str = "float32"
) -> str:
  """The model at a fixed batch size as StableHLO text, weights inside as constants, its "auto"
  kernels resolved for IREE (im2col convolutions: `research.kernels`).

  int8 stores each weight matrix as int8 with a per-channel scale and dequantizes in the graph
  (`serving/quantize.py`): the module's weights shrink about 4x, its arithmetic stays fp32.
  """
  check_precision(precision)
  model = for_platform(model, PLATFORM)
  if precision == "int8":
    quantized, exported_model = cast_params(params, "int8"), for_platform(model, EXPORT_PLATFORM)

    def fn(x):
      return exported_model.apply(dequantize(quantized), x).astype(jnp.float32)
  else:
    fn = inference_fn(model, params)
  spec = jax.ShapeDtypeStruct((int(batch), *input_shape), jnp.float32)
  try:
    exported = jax.export.export(jax.jit(fn), platforms=["cpu"])(spec)
  except Exception as e:
    raise ExportError(
      f"jax.export cannot export {type(model).__name__}: {_first_error(e)}"
    ) from None
  return exported.mlir_module()


def compile_module(mlir: str, target: Target, precision: str = "float32") -> bytes:
  """The `.vmfb` module of `mlir` for `target`, or ExportError with the compiler's first error.

  int8 turns IREE's constant evaluation off: it would fold the dequantization into fp32 weights
  (the MNIST-1D CNN's module: 38,359 bytes with it, 27,959 without, 38,103 in fp32).
  """
  import iree.compiler as ic

  flags = target.compiler_flags() + (["--iree-opt-const-eval=false"] if precision == "int8" else [])

  try:
    return bytes(
      ic.compile_str(
        mlir,
        target_backends=["llvm-cpu"],
        input_type="stablehlo",
        extra_args=flags,
      )
    )
  except Exception as e:
    raise ExportError(
      f"IREE cannot compile this model for {target.name}: {_first_error(e)}"
    ) from None


def _first_error(e: BaseException) -> str:
  """The first `error:` line of a compiler's diagnostics (its op and reason), else the message."""
  text = str(e)
  for line in text.splitlines():
    if "error:" in line:
      line = line.split("error:", 1)[1].strip()
      return line if len(line) <= 300 else line[:297] + "..."
  text = " ".join(text.split())
  return text if len(text) <= 300 else text[:297] + "..."


class _Module:
  """One compiled module loaded on the local-sync device: `main` for one batch size."""

  def __init__(self, config: Any, vmfb: bytes, source: str):
    import iree.runtime as ir

    self.context = ir.SystemContext(config=config)
    try:
      module = ir.VmModule.copy_buffer(self.context.instance, vmfb)
    except Exception as e:
      raise ExportError(
        f"{source} is not an IREE module ({_first_error(e)}); re-export it with "
        f"scripts/export.py --format iree"
      ) from None
    try:
      self.context.add_vm_module(module)
    except Exception as e:
      target = _compiled_for(str(e))
      raise ExportError(
        f"{source} was compiled for {target}, not for this host: run it on that device (or under "
        f"emulation: scripts/edge.py), or re-export it with --target host"
      ) from None
    self.main = self.context.modules[module.name][FUNCTION]
    self.device = config.device


def _compiled_for(message: str) -> str:
  """The executable format named in IREE's INCOMPATIBLE error (`embedded-elf-arm_64`), else a
  general phrase."""
  import re

  found = re.search(r'"(embedded-elf-[a-z0-9_]+|system-[a-z0-9_-]+|vmvx[a-z0-9_-]*)"', message)
  return f"another CPU ({found.group(1)})" if found else "another device"


class IreeEngine(Engine):
  """The `iree` engine: one host module per batch size, on IREE's local-sync driver."""

  engine = "iree"

  def __init__(
    self,
    modules: dict[int, bytes],
    input_shape: Sequence[int],
    compile_seconds: dict[int, float] | None = None,
    precision: str = "float32",
    source: str = "the compiled module",
    notes: str = "",
  ):
    import iree.runtime as ir

    self.batch_sizes = check_batch_sizes(list(modules))
    self.input_shape = tuple(int(d) for d in input_shape)
    self.precision, self.notes = precision, notes
    self.backend = "cpu"
    self.device_kind = f"IREE {DRIVER} (llvm-cpu, one thread)"
    self.model_bytes = len(modules[self.batch_sizes[0]])
    config = ir.Config(DRIVER)
    self.compile_seconds = {}
    self._modules: dict[int, _Module] = {}
    for b in self.batch_sizes:
      t = time.perf_counter()
      self._modules[b] = _Module(config, modules[b], source)
      self._modules[b].main(np.zeros((b, *self.input_shape), np.float32))  # first-call setup
      loaded = time.perf_counter() - t
      self.compile_seconds[b] = (compile_seconds or {}).get(b, 0.0) + loaded

  @classmethod
  def from_model(
    cls,
    model: Any,
    params: Any,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    precision: str = "float32",
  ) -> "IreeEngine":
    """Compiles the model for this host at each batch size (the compile time is recorded)."""
    modules, seconds = {}, {}
    for b in check_batch_sizes(batch_sizes):
      t = time.perf_counter()
      mlir = stablehlo_text(model, params, input_shape, b, precision)
      modules[b] = compile_module(mlir, TARGETS["host"], precision)
      seconds[b] = time.perf_counter() - t
    notes = f"StableHLO compiled by IREE {compiler_version()} for this host's CPU"
    return cls(modules, input_shape, seconds, precision, notes=notes)

  @classmethod
  def from_file(cls, path: str, input_shape: Sequence[int], batch: int) -> "IreeEngine":
    """Serves one exported module (`scripts/export.py --format iree`) at its batch size."""
    return cls({int(batch): read_model_file(path, "iree")}, input_shape, source=path)

  def _run(self, x: np.ndarray) -> np.ndarray:
    # A copy: to_host() maps the result buffer, which is freed with its DeviceArray.
    return np.array(self._modules[len(x)].main(x).to_host())

  def logits(self, x: np.ndarray) -> np.ndarray:
    x = self.check_input(x)
    n, largest = len(x), self.batch_sizes[-1]
    if n in self._modules:
      return self._run(x)
    chunks = [x[i : i + largest] for i in range(0, n, largest)]
    return np.concatenate([self._run_padded(c) for c in chunks])

  def _run_padded(self, x: np.ndarray) -> np.ndarray:
    n = len(x)
    b = self.padded_size(n)
    if b != n:
      x = np.concatenate([x, np.zeros((b - n, *self.input_shape), np.float32)])
    return self._run(x)[:n]

  def timing_calls(self, x_host: np.ndarray) -> dict[str, Any]:
    """local-sync runs the call inline, so it returns with the result computed: compute alone is
    the call on a device-resident input, its result left on the device."""
    import iree.runtime as ir

    module = self._modules[len(x_host)]
    x_host = np.ascontiguousarray(x_host, np.float32)
    x_dev = ir.asdevicearray(module.device, x_host)
    return {
      "floor": lambda: np.array(module.main(x_host).to_host()),
      "compute": lambda: module.main(x_dev),
    }


RUNTIME_NEEDS = (
  "IREE's runtime of the same release (iree-run-module, or its C API) with the local-sync "
  "driver (one thread) or local-task; no Python, no JAX"
)


def export_module(
  model: Any,
  params: Any,
  input_shape: Sequence[int],
  num_classes: int,
  target_name: str,
  batch: int = 1,
  precision: str = "float32",
) -> tuple[bytes, dict[str, Any]]:
  """The module for `target_name` at a fixed `batch`, and its manifest: what it was compiled
  for and by, what it takes and gives, how big it is, and what a device needs to run it."""
  target = check_target(target_name)
  if batch < 1:
    raise ExportError(f"--batch must be a positive integer, got {batch}")
  t = time.perf_counter()
  vmfb = compile_module(
    stablehlo_text(model, params, input_shape, batch, precision), target, precision
  )
  manifest = {
    "target": target.name,
    "describes": target.describes,
    "triple": target.triple or "the host's",
    "cpu": target.cpu,
    "cpu_features": target.features or "the host's",
    "abi": target.abi,
    "compiler": f"iree-base-compiler {compiler_version()}",
    "precision": precision,
    "function": FUNCTION,
    "inputs": [{"shape": [int(batch), *map(int, input_shape)], "dtype": "float32"}],
    "outputs": [{"shape": [int(batch), int(num_classes)], "dtype": "float32", "is": "logits"}],
    "bytes": len(vmfb),
    "compile_seconds": time.perf_counter() - t,
    "runtime_needs": RUNTIME_NEEDS,
  }
  return vmfb, manifest
