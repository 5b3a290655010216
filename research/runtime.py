"""Process-level settings that must be fixed before JAX starts, and recorded with every timing."""

from __future__ import annotations

import os
import sys

ONE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def configure_threads(threads: int) -> None:
  """`threads=1` pins the process to one core and XLA:CPU to one thread; 0 keeps XLA's default.

  Tiny ops pay more for threading than they gain. Pinning also makes results independent of
  how the process was launched: XLA:CPU sizes its thread pool from the CPUs the process may
  use, and the pool's size changes how work is split and so the float rounding (an MNIST-1D CNN
  run ends 2 points apart in accuracy). The core is the first the process may use (choose one
  with `taskset -c N`). XLA reads its settings once, when the backend starts, so this refuses
  to run after JAX has.
  """
  if threads not in (0, 1):
    raise ValueError(f"threads must be 0 (XLA default) or 1 (pinned), got {threads}")
  if threads == 0:
    return
  flags = os.environ.get("XLA_FLAGS", "")
  already = ONE_THREAD_FLAGS in flags
  if not already and "jax" in sys.modules and _backend_started():
    raise RuntimeError("configure_threads must run before JAX initialises its backend")
  if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  if "xla_cpu_multi_thread_eigen" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " " + ONE_THREAD_FLAGS).strip()


def single_threaded() -> bool:
  """Whether `configure_threads(1)` (or the same XLA flags) pinned XLA:CPU to one thread."""
  return "xla_cpu_multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", "")


def _backend_started() -> bool:
  try:
    from jax._src import xla_bridge

    return bool(xla_bridge._backends)
  except Exception:  # private API moved: assume started, the safe answer
    return True


def thread_settings() -> dict:
  """What a timing ran under: XLA flags, CPU affinity, core count."""
  try:
    affinity = sorted(os.sched_getaffinity(0))
  except AttributeError:
    affinity = None
  return {
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "cpu_affinity": affinity,
    "cpu_count": os.cpu_count(),
  }
