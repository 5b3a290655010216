"""A worker process of `research/training/workers.py`: what runs in it, from its start to its end.

It installs the preemption handlers quiet (its parent speaks for it), asks for SIGTERM when its
parent dies, unblocks the signals its parent blocked while starting it, then takes one job at a
time from its pipe: `fn(*args)`, and the answer back. JAX starts with the first job, after the
worker is pinned to its core, so a worker told to leave before it had work leaves at once.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import threading
import time
import traceback
from typing import Any, Callable, NoReturn

from research.training import preemption

PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_SECONDS = 1.0  # how often a worker without PR_SET_PDEATHSIG looks for its parent


def start_worker(core: int, xla_flags: str, compilation_cache: str) -> None:
  """Pins this worker to `core`, before JAX starts in it."""
  os.sched_setaffinity(0, {core})
  if xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags).strip()
  from research.runtime import configure_threads

  configure_threads(1)
  if compilation_cache:
    import jax

    jax.config.update("jax_compilation_cache_dir", compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def serve(fn: Callable, conn: Any, core: int, xla_flags: str, cache: str, parent: int) -> NoReturn:
  """A worker's life: quiet handlers, the parent-death signal, then one job at a time until it
  is told to leave (None), its parent goes, or a signal stops it. Replies ("done", result),
  ("stopped", signal, runs checkpointed) or ("failed", error, traceback)."""
  preemption.install(quiet=True)
  _die_with(parent)
  from tqdm import tqdm

  # tqdm's default lock is a process-shared semaphore, which a spawned process registers with
  # multiprocessing's resource tracker: exiting by os._exit, it was reported leaked (2 lines).
  tqdm.set_lock(threading.RLock())
  signal.pthread_sigmask(signal.SIG_UNBLOCK, preemption.HANDLED)  # blocked by the parent
  started = False
  while True:
    try:
      args = conn.recv()
    except (EOFError, OSError):
      _leave(0)  # the parent is gone
    if args is None:
      _leave(0)
    if not started:
      start_worker(core, xla_flags, cache)
      started = True
    try:
      reply: tuple = ("done", fn(*args))
    except preemption.Interrupted as e:
      reply = ("stopped", e.signum, e.runs)
    except BaseException as e:  # noqa: BLE001 (the parent decides; nothing may escape here)
      reply = ("failed", *_portable(e))
    try:
      conn.send(reply)
    except (OSError, EOFError):  # the parent is gone
      _leave(1)
    except Exception as e:  # the result cannot be pickled
      conn.send(("failed", *_portable(e)))
    if reply[0] == "stopped":
      _leave(0)
    if preemption.requested() is not None:  # came after the job's last chunk: stop now
      _leave(128 + preemption.requested())


def _portable(error: BaseException) -> tuple[BaseException, str]:
  """The error as the parent can raise it: itself if it survives pickling (a `UserError` keeps
  its one line), else a RuntimeError with its traceback."""
  text = "".join(traceback.format_exception(error))
  try:
    pickle.loads(pickle.dumps(error))
  except Exception:
    error = RuntimeError(f"a job failed in its worker:\n{text}")
  return error, text


def _die_with(parent: int) -> None:
  """SIGTERM to this process when `parent` dies, so it checkpoints and exits (F4: a worker
  re-parented after its parent's kill -9 had trained on for minutes, then blocked forever)."""
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
  except (OSError, AttributeError):  # not Linux
    armed = False
  if os.getppid() != parent:  # it died before the signal was armed
    _leave(0)
  if not armed:
    threading.Thread(target=_watch, args=(parent,), daemon=True).start()


def _watch(parent: int) -> None:
  while os.getppid() == parent:
    time.sleep(WATCH_SECONDS)
  os.kill(os.getpid(), signal.SIGTERM)


def _leave(code: int) -> NoReturn:
  """Exits without interpreter shutdown (background threads then print nothing)."""
  preemption.exit_now(code)
