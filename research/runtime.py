"""Process-level settings that must be fixed before JAX starts, and recorded with every timing."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import time
from typing import Iterator

ONE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def configure_threads(threads: int, process_index: int | None = None) -> None:
  """`threads=1` pins the process to one core and XLA:CPU to one thread; 0 keeps XLA's default.

  Tiny ops pay more for threading than they gain. Pinning also makes results independent of
  how the process was launched: XLA:CPU sizes its thread pool from the CPUs the process may
  use, and the pool's size changes how work is split and so the float rounding (an MNIST-1D CNN
  run ends 2 points apart in accuracy). Which core it is changes no number; `choose_core`
  picks it so that concurrent jobs spread over the cores (`taskset -c N` fixes it).
  `process_index`: this process's index among several (`--distributed`). XLA reads its
  settings once, when the backend starts, so this refuses to run after JAX has.
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
    _pin(process_index)
  if "xla_cpu_multi_thread_eigen" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " " + ONE_THREAD_FLAGS).strip()


def choose_core(
  allowed: list[int], process_index: int | None = None, pinned: dict[int, int] | None = None
) -> int:
  """The core to pin to, among the `allowed` ones (sorted).

  With a process index (one of several processes started together), core `index mod count`:
  the processes of one job land on different cores whatever else runs. Otherwise the allowed
  core the fewest other processes are pinned to (`pinned`: core -> count), the lowest on a tie.
  Pinned processes are what piles up: the scheduler moves unpinned work off a busy core, but
  not a pinned one, so before, with every process on its lowest allowed core, two jobs shared
  core 0 (13 steps/s each) while core 1 idled.
  """
  if process_index is not None:
    return allowed[process_index % len(allowed)]
  pinned = pinned or {}
  return min(allowed, key=lambda core: (pinned.get(core, 0), core))


def _pin(process_index: int | None) -> None:
  allowed = sorted(os.sched_getaffinity(0))
  if len(allowed) == 1 or process_index is not None:
    os.sched_setaffinity(0, {choose_core(allowed, process_index)})
    return
  with _choosing_alone():  # a process choosing after this one sees this one's choice
    os.sched_setaffinity(0, {choose_core(allowed, pinned=_pinned_counts())})


def _pinned_counts(proc: str = "/proc") -> dict[int, int]:
  """How many user processes other than this one are pinned to each single core (Linux /proc;
  kernel threads, which have no memory map, are left out)."""
  counts: dict[int, int] = {}
  me = str(os.getpid())
  try:
    pids = [p for p in os.listdir(proc) if p.isdigit() and p != me]
  except OSError:
    return counts
  for pid in pids:
    try:
      with open(os.path.join(proc, pid, "status")) as f:
        status = f.read()
    except OSError:  # gone meanwhile, or not ours to read
      continue
    if "\nVmSize:" not in status:
      continue
    cores = status.partition("\nCpus_allowed_list:")[2].split("\n", 1)[0].strip()
    if cores.isdigit():
      counts[int(cores)] = counts.get(int(cores), 0) + 1
  return counts


@contextlib.contextmanager
def _choosing_alone(wait_seconds: float = 2.0) -> Iterator[None]:
  """One process at a time between reading the others' cores and pinning: a lock held by
  binding a Linux abstract socket, which leaves no file and is released when its holder exits.
  After `wait_seconds` without it (or where there are no abstract sockets) it goes on unlocked."""
  sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  deadline = time.monotonic() + wait_seconds
  try:
    while True:
      try:
        sock.bind("\0research-runtime-choose-core")
        break
      except OSError as e:
        if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
          break
        time.sleep(0.005)
    yield
  finally:
    sock.close()


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


def numeric_environment() -> dict:
  """What changes a run's numbers without being its config, recorded in the run so a resume
  under another setting is refused (research/workdir.py `check_numerics`): JAX x64 mode, the
  XLA:CPU thread count (1 when pinned by `configure_threads(1)`, else the usable CPUs XLA
  sizes its pool from), and the backend. Starts JAX's backend."""
  import jax

  try:
    cpus = len(os.sched_getaffinity(0))
  except AttributeError:
    cpus = os.cpu_count() or 1
  return {
    "jax_enable_x64": bool(jax.config.jax_enable_x64),
    "xla_cpu_threads": 1 if single_threaded() else cpus,
    "backend": jax.default_backend(),
  }


_INSTALL = {  # how to get a backend JAX_PLATFORMS may name
  "cuda": 'pip install -U "jax[cuda12]" on a machine with an NVIDIA GPU',
  "gpu": 'pip install -U "jax[cuda12]" on a machine with an NVIDIA GPU',
  "tpu": 'pip install -U "jax[tpu]" on a TPU VM',
  "rocm": "install JAX's ROCm plugin on a machine with an AMD GPU",
}


def backend_problem(e: BaseException) -> str | None:
  """The one line for JAX failing to start a backend that JAX_PLATFORMS names (None: `e` is not
  that). JAX says so with an AssertionError (cuda on a machine without an NVIDIA GPU) or a
  RuntimeError, 30 lines deep; the line names the missing backend and the fix."""
  wanted = [p.strip() for p in os.environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
  if not wanted or "jax" not in sys.modules:
    return None
  import traceback

  frames = traceback.extract_tb(e.__traceback__)
  if not any(f.filename.endswith(os.path.join("jax", "_src", "xla_bridge.py")) for f in frames):
    return None
  try:
    from jax._src import hardware_utils, xla_bridge

    known = set(xla_bridge._backend_factories)
    gpu = hardware_utils.has_visible_nvidia_gpu()
  except Exception:  # private API moved: say less
    known, gpu = set(), True
  missing = []
  for name in wanted:
    if name in ("cuda", "gpu") and not gpu:
      missing.append(f"{name} (no NVIDIA GPU visible)")
    elif known and name not in known:
      missing.append(f"{name} (not installed)")
    elif isinstance(e, RuntimeError) and f"backend '{name}'" in str(e):
      missing.append(f"{name} ({str(e).split(': ', 1)[-1].split(' (set JAX_PLATFORMS')[0][:120]})")
  missing = missing or [", ".join(wanted)]
  fixes = dict.fromkeys(_INSTALL.get(m.split()[0], "install its JAX plugin") for m in missing)
  return (
    f"JAX_PLATFORMS={os.environ['JAX_PLATFORMS']} asks for a backend this machine cannot start: "
    f"{'; '.join(missing)}; unset JAX_PLATFORMS (JAX then uses what is here, e.g. the CPU) or "
    f"{' / '.join(fixes)}"
  )
