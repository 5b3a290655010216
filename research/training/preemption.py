"""Stopping a run cleanly on SIGTERM (a preempted job) or Ctrl-C (SIGINT).

Two phases. Until a run has written anything, a signal ends the process at once with one line:
there is nothing to save, and the default KeyboardInterrupt raised while JAX starts was caught
by library code and swallowed (2 of 8 tries went on to finish with exit 0). Once `deferred()`
is entered the first signal is only recorded: the loop asks `requested()` after every chunk,
checkpoints that step, flushes its events and raises `Interrupted`, so the process exits 143
(SIGTERM) or 130 (SIGINT) with nothing in flight. A KeyboardInterrupt raised in the middle of an
asynchronous save had hung the process forever in 2 of 4 tries. A second signal exits at once
without waiting: Orbax writes each step to a temporary name and renames it when complete, so a
save cut short is never listed, and the resume starts from the newest complete step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator

_HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
  """The run stopped on a signal after checkpointing; `exit_code` is 128 + the signal number."""

  def __init__(self, signum: int, step: int | None):
    self.signum, self.step = signum, step
    self.exit_code = 128 + signum
    name = signal.Signals(signum).name
    where = f"at step {step}; checkpoint saved" if step is not None else "before training"
    super().__init__(f"interrupted by {name} {where}; re-run the same command to resume")


class _State:
  installed = False
  depth = 0  # >0: inside deferred(), signals are recorded
  received: int | None = None
  finished = False  # a deferred() block has ended


def install() -> None:
  """Takes over SIGINT and SIGTERM for this process (main thread only; idempotent)."""
  if _State.installed or threading.current_thread() is not threading.main_thread():
    return
  for signum in _HANDLED:
    signal.signal(signum, _handle)
  _State.installed = True


def _handle(signum: int, frame) -> None:
  name = signal.Signals(signum).name
  if _State.depth > 0 and _State.received is None:
    _State.received = signum  # one line, when the checkpoint is on disk (`Interrupted`)
    return
  if _State.depth > 0:
    message = f"{name} again: stopped at once; re-run the same command to resume from the "
    message += "newest complete checkpoint"
    code = 128 + _State.received
  elif _State.finished:
    message, code = f"interrupted by {name} after training had finished", 128 + signum
  else:
    message = f"interrupted by {name} before training started; nothing was written"
    code = 128 + signum
  print(message, file=sys.stderr, flush=True)
  from research import workdir_lock

  workdir_lock.release_all()  # os._exit runs no cleanup: the lock file would stay behind
  os._exit(code)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
  """Inside, the first signal is recorded for `requested()` instead of ending the process."""
  _State.depth += 1
  try:
    yield
  finally:
    _State.depth -= 1
    _State.finished = _State.depth == 0


def requested() -> int | None:
  """The signal received inside `deferred()` (or None)."""
  return _State.received


def agreed(received: int | None) -> int | None:
  """The signal any process received: every process of a multi-process run stops at the same
  chunk, or the others would wait forever in the next collective."""
  import jax

  if jax.process_count() == 1:
    return received
  import numpy as np
  from jax.experimental import multihost_utils

  signals = multihost_utils.process_allgather(np.int32(received or 0))
  nonzero = [int(s) for s in np.ravel(signals) if s]
  return nonzero[0] if nonzero else None


def reset() -> None:
  """Forgets a recorded signal (tests; a process that trains again after handling one)."""
  _State.received = None
