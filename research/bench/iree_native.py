"""IREE's own runtime tools on this host: the kernel time without Python, and a minimal process's
peak memory.

The Python binding adds a few microseconds per call (measured on the MNIST-1D CNN at batch 1,
one core: 23 µs compute-only through the binding, 20 µs from `iree-benchmark-module`), which
hides part of the kernel time at batch 1, so the edge report gives both, labelled.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from typing import Sequence

from research.serving.iree import DRIVER, FUNCTION

TOOL_TIMEOUT_S = 300


def host_tool(name: str) -> str:
  """The path of one of the host runtime wheel's tools (`iree-run-module`, ...)."""
  import iree.runtime

  path = os.path.join(os.path.dirname(iree.runtime.__file__), "..", "_runtime_libs", name)
  return os.path.normpath(path)


def _input_flag(shape: Sequence[int]) -> str:
  return f"--input={'x'.join(map(str, shape))}xf32=0"


def benchmark_module(vmfb: bytes, input_shape: Sequence[int], repetitions: int = 5) -> dict:
  """`iree-benchmark-module`'s time per call of `main` on zeros of `input_shape` (with the batch),
  local-sync: the median of `repetitions` repetitions, each the mean of many calls."""
  with tempfile.TemporaryDirectory(prefix="iree-bench-") as tmp:
    module = os.path.join(tmp, "module.vmfb")
    with open(module, "wb") as f:
      f.write(vmfb)
    command = [host_tool("iree-benchmark-module"), f"--device={DRIVER}", f"--module={module}",
               f"--function={FUNCTION}", _input_flag(input_shape),
               f"--benchmark_repetitions={repetitions}", "--benchmark_format=json"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
  if done.returncode != 0:
    raise RuntimeError(f"iree-benchmark-module failed: {done.stderr.strip()[-300:]}")
  runs = [b for b in json.loads(done.stdout)["benchmarks"] if b.get("run_type") == "iteration"]
  per_call_us = sorted(_us(b["real_time"], b["time_unit"]) for b in runs)
  return {
    "tool": "iree-benchmark-module",
    "p50_of_repetition_means_us": per_call_us[len(per_call_us) // 2],
    "repetitions": len(runs),
    "calls_per_repetition": int(runs[0]["iterations"]) if runs else 0,
  }


def _us(value: float, unit: str) -> float:
  return value * {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[unit]


GNU_TIME = "/usr/bin/time"  # Debian's `time` package


def peak_rss_bytes(vmfb: bytes, input_shape: Sequence[int]) -> int | None:
  """Peak resident memory of a fresh `iree-run-module` process that loads the module and answers
  one request: what a minimal deployment holds. None where GNU time is not installed.

  Measured through GNU time, a small process that starts the tool and reads its rusage: a child
  started from this (large) Python process would report this process's resident size instead,
  since Linux carries the peak across fork and exec (measured: 164 MiB, against 4.4 MiB).
  """
  if not os.access(GNU_TIME, os.X_OK):
    return None
  with tempfile.TemporaryDirectory(prefix="iree-rss-") as tmp:
    module, report = os.path.join(tmp, "module.vmfb"), os.path.join(tmp, "rss")
    with open(module, "wb") as f:
      f.write(vmfb)
    command = [GNU_TIME, "-f", "%M", "-o", report, host_tool("iree-run-module"),
               f"--device={DRIVER}", f"--module={module}", f"--function={FUNCTION}",
               _input_flag(input_shape)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    if done.returncode != 0:
      raise RuntimeError(f"iree-run-module failed: {done.stderr.strip()[-300:]}")
    with open(report) as f:
      return int(f.read().split()[-1]) * 1024  # KiB


def dispatch_times(
  mlir: str,
  compiler_flags: Sequence[str],
  input_shape: Sequence[int],
  repetitions: int = 5,
  min_seconds: float = 0.05,
) -> dict:
  """Where a module's time goes: the whole module's time per call on zeros of `input_shape`
  (`benchmark_module`), and dispatch by dispatch, largest first, from the same compilation.

  IREE's compiler writes each of the module's executables out as a standalone benchmark
  (`--iree-hal-dump-executable-benchmarks-to`) with the workload the module gives it; each is
  compiled and timed by `iree-benchmark-module` (median of `repetitions`, each at least
  `min_seconds` of calls). Each figure carries the tool's floor per dispatch (about 1 µs on this
  host), so read them at a batch where dispatches run long. How the MNIST-1D CNN's direct
  convolutions were found to hold 99.7 % of its time.
  """
  import glob

  import iree.compiler as ic

  rows = []
  with tempfile.TemporaryDirectory(prefix="iree-dispatches-") as tmp:
    vmfb = ic.compile_str(
      mlir,
      target_backends=["llvm-cpu"],
      input_type="stablehlo",
      extra_args=[*compiler_flags, f"--iree-hal-dump-executable-benchmarks-to={tmp}"],
    )
    for source in sorted(glob.glob(os.path.join(tmp, "*.mlir"))):
      module = source + ".vmfb"
      try:
        ic.compile_file(source, output_file=module, target_backends=["llvm-cpu"])
      except Exception as e:  # recorded, not fatal: the other dispatches still say their share
        rows.append({"dispatch": os.path.basename(source), "us": None, "why": str(e)[:200]})
        continue
      command = [host_tool("iree-benchmark-module"), f"--device={DRIVER}", f"--module={module}",
                 f"--benchmark_repetitions={repetitions}", f"--benchmark_min_time={min_seconds}s",
                 "--benchmark_format=json"]  # fmt: skip
      done = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
      if done.returncode != 0:
        raise RuntimeError(f"iree-benchmark-module failed: {done.stderr.strip()[-300:]}")
      found = json.loads(done.stdout)["benchmarks"]
      # The median over repetitions; with one repetition the tool writes no aggregate.
      medians = [b for b in found if b.get("aggregate_name") == "median"] or found
      for b in medians:
        name = b["run_name"].split("/")[0]
        rows.append(
          {
            "dispatch": name[name.rfind(f"{FUNCTION}_dispatch_") :],
            "us": _us(b["real_time"], b["time_unit"]),
          }
        )
  whole = benchmark_module(bytes(vmfb), input_shape)
  return {
    "module_us": whole["p50_of_repetition_means_us"],
    "dispatches": sorted(rows, key=lambda r: -(r["us"] or 0)),
  }
