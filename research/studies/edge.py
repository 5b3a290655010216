"""The edge figures of a trained classifier: its IREE modules per CPU target, proof that the
phone-class module runs and answers as the host does, and what a prediction would cost on a
phone's cores and a microcontroller.

Three kinds of number, never mixed:
- measured on this host: the host module's agreement with jax, its time per call (through the
  Python binding and from IREE's own benchmark tool), and the peak memory of a minimal process;
- checked under emulation: the aarch64 module's test-set predictions (no time is taken there);
- projected: latency and energy on the edge devices, from their documented peaks
  (`research/cost/edge_devices.py`), each labelled a projection.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import numpy as np

from research.serving.export import compare_logits
from research.serving.iree import TARGETS, IreeEngine, export_module

PRECISIONS = ("float32", "int8")
# fp32 kernels for another CPU sum in another order: the CNN's and GRU's logits differ from the
# host's by up to 6e-5 (measured), far inside this bound, which an error in the module would not be.
LOGIT_TOLERANCE = 1e-3
EMULATION_BATCH = 250  # examples per emulated process (one module compiled at this batch)
# The batch the host module's time is split by dispatch at: long enough that the benchmark tool's
# floor per dispatch (about 1 µs) is a small part of each.
DISPATCH_BATCH = 256


def edge_study(
  run: Any,
  x_test: np.ndarray,
  reference: np.ndarray,
  runtime_wheel: str | None,
  latency_calls: int = 2000,
  log: Callable[[str], None] = print,
  dispatch_batch: int | None = DISPATCH_BATCH,
) -> dict[str, Any]:
  """Every edge figure of one run. `reference`: the jitted apply's test-set logits.
  `dispatch_batch`: the batch the host module's time is split by dispatch at (None: not split)."""
  from research.bench.iree_native import peak_rss_bytes
  from research.bench.timing import stats_us, time_calls
  from research.cost.edge_devices import projections
  from research.cost.flops import forward_flops
  from research.cost.hardware import measure_peak_flops

  modules, artifacts = compile_modules(run, tuple(TARGETS), log)
  host: dict[str, Any] = {"agreement": {}}
  for precision in PRECISIONS:
    engine = IreeEngine({1: artifacts["host", precision]}, run.input_shape, precision=precision)
    host["agreement"][precision] = _agreement(reference, engine.logits(x_test))
    if precision == "float32":
      calls = engine.timing_calls(np.ascontiguousarray(x_test[:1], np.float32))
      host["python_binding_compute_us"] = stats_us(time_calls(calls["compute"], latency_calls))
  host["peak_rss_bytes"] = peak_rss_bytes(artifacts["host", "float32"], (1, *run.input_shape))
  flops = float(forward_flops(run.config.model.to_dict(), run.input_shape, run.num_classes))
  host.update(
    host_kernel(run, artifacts["host", "float32"], flops, measure_peak_flops()["peak_flops"])
  )
  log(
    f"host: {host['benchmark_module']['p50_of_repetition_means_us']:.1f} µs per call "
    f"(iree-benchmark-module), {host['fraction_of_peak']:.1%} of this core's peak"
  )
  if dispatch_batch:
    host["dispatches"] = dispatch_profile(run, dispatch_batch, log)

  emulated = {
    t: _emulate(run, x_test, reference, t, runtime_wheel, artifacts, log)
    for t in TARGETS
    if t != "host"
  }
  weights = weights_bytes(run.params)
  return {
    "experiment": run.config.experiment,
    "step": run.step,
    "params": int(sum(np.size(p) for p in _leaves(run.params))),
    "flops_per_prediction": flops,
    "weights_bytes": weights,
    "modules": modules,
    "host": host,
    "emulated": emulated,
    "devices": projections(flops, host["fraction_of_peak"], weights["float32"]),
  }


def edge_summary(
  run: Any, flops_per_prediction: float, peak_flops: float, log: Callable[[str], None] = print
) -> dict[str, Any]:
  """The main job's "on the edge" figures, from the same functions as `edge_study`: the modules'
  bytes for this host and a phone's core, the host module's kernel time and fraction of peak, and
  the projections. The emulated check is `scripts/edge.py`'s (it needs QEMU and a wheel)."""
  from research.cost.edge_devices import projections
  from research.serving.export import ExportError

  try:
    modules, artifacts = compile_modules(run, ("host", "aarch64"), log)
  except ExportError as e:
    return {"available": False, "reason": str(e)}
  host = host_kernel(run, artifacts["host", "float32"], flops_per_prediction, peak_flops)
  weights = weights_bytes(run.params)
  return {
    "available": True,
    "flops_per_prediction": flops_per_prediction,
    "weights_bytes": weights,
    "modules": modules,
    "host": host,
    "devices": projections(flops_per_prediction, host["fraction_of_peak"], weights["float32"]),
  }


def dispatch_profile(run: Any, batch: int, log: Callable[[str], None]) -> dict[str, Any]:
  """The host module's time at `batch`, whole and dispatch by dispatch; for a model whose
  convolutions IREE gets as im2col matmuls (`research.kernels`), the same with IREE's direct
  convolutions beside it, which is why the module takes im2col."""
  from research.bench.iree_native import dispatch_times
  from research.models import for_platform
  from research.serving.iree import PLATFORM, stablehlo_text

  variants = {"as exported": run.model}
  if getattr(for_platform(run.model, PLATFORM), "conv_impl", "xla") != "xla":
    variants["with IREE's direct convolutions (conv_impl=xla; not exported)"] = run.model.clone(
      conv_impl="xla"
    )
  flags, shape = TARGETS["host"].compiler_flags(), (batch, *run.input_shape)
  out: dict[str, Any] = {"batch": batch, "variants": {}}
  for name, model in variants.items():
    mlir = stablehlo_text(model, run.params, run.input_shape, batch)
    out["variants"][name] = split = dispatch_times(mlir, flags, shape)
    log(f"host at batch {batch}, {name}: {split['module_us']:.0f} µs per call")
  return out


def compile_modules(
  run: Any, targets: tuple[str, ...], log: Callable[[str], None]
) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], bytes]]:
  """Batch-1 modules of the run for each target and precision: manifests, and the modules."""
  modules: dict[str, dict[str, Any]] = {}
  artifacts: dict[tuple[str, str], bytes] = {}
  for target in targets:
    for precision in PRECISIONS:
      vmfb, manifest = export_module(
        run.model, run.params, run.input_shape, run.num_classes, target, 1, precision
      )
      artifacts[target, precision] = vmfb
      modules.setdefault(target, {})[precision] = manifest
    log(f"compiled for {target}: {len(artifacts[target, 'float32']):,} bytes (fp32)")
  return modules, artifacts


def host_kernel(run: Any, vmfb: bytes, flops: float, peak_flops: float) -> dict[str, Any]:
  """The host module's batch-1 time from `iree-benchmark-module` (no Python), and the fraction of
  this core's measured peak it reaches: what the projections scale the devices' peaks by."""
  from research.bench.iree_native import benchmark_module

  bench = benchmark_module(vmfb, (1, *run.input_shape))
  kernel_s = bench["p50_of_repetition_means_us"] * 1e-6
  return {
    "benchmark_module": bench,
    "peak_flops": peak_flops,
    "fraction_of_peak": flops / kernel_s / peak_flops,
  }


def weights_bytes(params: Any) -> dict[str, int]:
  from research.models import tree_bytes
  from research.serving.quantize import quantize_int8

  return {"float32": tree_bytes(params), "int8": tree_bytes(quantize_int8(params))}


def _leaves(tree: Any) -> list:
  import jax

  return jax.tree.leaves(tree)


def _agreement(reference: np.ndarray, logits: np.ndarray) -> dict[str, Any]:
  check = compare_logits(reference, logits)
  check["agreement"] = 1.0 - check["predictions_differing"] / check["examples"]
  return check


def _emulate(
  run: Any,
  x_test: np.ndarray,
  reference: np.ndarray,
  target: str,
  runtime_wheel: str | None,
  artifacts: dict[tuple[str, str], bytes],
  log: Callable[[str], None],
) -> dict[str, Any]:
  """The target's module on the test set under emulation: agreement with the host's jax, and the
  batch-1 artifact itself on one example. Records why where it cannot run."""
  from research.serving.emulation import (
    EMULATORS,
    NOT_EMULATED,
    emulator_for,
    find_runtime_wheel,
    qemu_version,
    run_under_emulation,
  )

  if target not in EMULATORS:
    return {"run": False, "why": NOT_EMULATED.get(target, "no emulator set up")}
  if runtime_wheel is None:
    return {"run": False, "why": "--no-emulate"}
  wheel = find_runtime_wheel(emulator_for(target), runtime_wheel)
  t = time.perf_counter()
  n = len(x_test)
  pad = -n % EMULATION_BATCH
  x = np.concatenate([x_test, np.zeros((pad, *run.input_shape), np.float32)]).astype(np.float32)
  vmfb, _ = export_module(
    run.model, run.params, run.input_shape, run.num_classes, target, EMULATION_BATCH
  )
  chunks = [x[i : i + EMULATION_BATCH] for i in range(0, len(x), EMULATION_BATCH)]
  logits = np.concatenate(run_under_emulation(vmfb, chunks, target, runtime_wheel))[:n]
  (one,) = run_under_emulation(artifacts[target, "float32"], [x_test[:1]], target, runtime_wheel)
  check = _agreement(reference, logits)
  log(
    f"{target} under emulation: {check['agreement']:.4f} of {n} test predictions equal to the "
    f"host's, max logit difference {check['max_abs_logit_difference']:.1e}"
  )
  return {
    "run": True,
    **check,
    "tolerance": f"argmax equal on every example; logits within {LOGIT_TOLERANCE:g}",
    "within_tolerance": bool(
      check["predictions_identical"] and check["max_abs_logit_difference"] < LOGIT_TOLERANCE
    ),
    "module_batch": EMULATION_BATCH,
    "artifact_batch1_max_abs_logit_difference": float(np.abs(one - reference[:1]).max()),
    "emulator": qemu_version(target),
    "runtime": f"iree-run-module from {os.path.basename(wheel)}",
    "wall_seconds_not_a_latency": time.perf_counter() - t,
  }
