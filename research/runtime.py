"""Process-level settings that must be fixed before JAX starts, and recorded with every timing."""
from __future__ import annotations

import os
import sys

ONE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def configure_threads(threads: int) -> None:
  """`threads=1` pins XLA:CPU to one thread (tiny ops pay for threading); 0 keeps XLA's default.

  XLA reads its flags once, when the backend starts, so this refuses to run after JAX has.
  """
  if threads not in (0, 1):
    raise ValueError(f"threads must be 0 (XLA default) or 1 (pinned), got {threads}")
  if threads == 0:
    return
  if "jax" in sys.modules and _backend_started():
    raise RuntimeError("configure_threads must run before JAX initialises its backend")
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_multi_thread_eigen" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " " + ONE_THREAD_FLAGS).strip()


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
  return {"xla_flags": os.environ.get("XLA_FLAGS", ""), "cpu_affinity": affinity,
          "cpu_count": os.cpu_count()}
