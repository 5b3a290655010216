"""Stopping a run cleanly on SIGTERM (a preempted job), Ctrl-C (SIGINT) or SIGHUP (its terminal
closed; treated as SIGTERM).

Two phases. Until a run has written anything, a signal ends the process at once with one line:
there is nothing to save, and the default KeyboardInterrupt raised while JAX starts was caught
by library code and swallowed (2 of 8 tries went on to finish with exit 0). Once `deferred()`
is entered the first signal is only recorded: the loop asks `requested()` after every chunk,
checkpoints that step, flushes its events and raises `Interrupted`, so the process exits 143
(SIGTERM), 130 (SIGINT) or 129 (SIGHUP) with nothing in flight. A KeyboardInterrupt raised in
the middle of an asynchronous save had hung the process forever in 2 of 4 tries. A second
signal exits at once without waiting: Orbax writes each step to a temporary name and renames it
when complete, so a save cut short is never listed, and the resume starts from the newest
complete step.

A worker process of a sweep (`research/training/workers.py`) installs the handlers `quiet`: its
parent speaks for it, so it prints nothing, a repeated signal is ignored (the parent forwards
what it receives, and a terminal's Ctrl-C reaches both; the parent escalates with SIGKILL), and
outside `deferred()` it exits at once with status 128 + the signal.

A command that trains nothing (export, infer, bench, compare_runs, ...) installs the handlers
`unwind`: outside `deferred()` the first signal raises where the command is (`Stopped`, or
KeyboardInterrupt for Ctrl-C), so its `finally` blocks run and its atomic writers remove their
temporaries, and `cli.run_main` exits 143, 129 or 130 with one line. Dying at once had left
`*.tmp<pid>` files and half-replaced output directories. A second signal exits at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator, NoReturn

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
  """The run stopped on a signal after checkpointing; `exit_code` is 128 + the signal number."""

  def __init__(self, signum: int, step: int | None, message: str = "", runs: int = 1):
    self.signum, self.step, self.runs = signum, step, runs  # runs: how many were checkpointed
    self.exit_code = 128 + signum
    name = signal.Signals(signum).name
    where = f"at step {step}; checkpoint saved" if step is not None else "before training"
    super().__init__(message or f"interrupted by {name} {where}; re-run the same command to resume")


class Stopped(BaseException):
  """A command that trains nothing, stopped by SIGTERM or SIGHUP where it was (`install(unwind=
  True)`). A BaseException, as KeyboardInterrupt is: library code that catches Exception must
  not swallow it."""

  def __init__(self, signum: int):
    self.signum, self.exit_code = signum, 128 + signum
    name = signal.Signals(signum).name
    super().__init__(f"stopped by {name} before the end; re-run the same command")


class _State:
  installed = False
  depth = 0  # >0: inside deferred(), signals are recorded
  received: int | None = None
  finished = False  # a deferred() block has ended
  quiet = False  # a worker: no line, repeats ignored (research/training/workers.py)
  unwind = False  # a command that trains nothing: the first signal raises (`Stopped`)
  stopping: int | None = None  # the signal that raised `Stopped` or KeyboardInterrupt


def install(quiet: bool = False, unwind: bool = False) -> None:
  """Takes over SIGINT, SIGTERM and SIGHUP for this process (main thread only; idempotent).

  `quiet`: a sweep's worker; `unwind`: a command that trains nothing (the module's doc)."""
  if _State.installed or threading.current_thread() is not threading.main_thread():
    return
  _State.quiet, _State.unwind = quiet, unwind
  for signum in HANDLED:
    signal.signal(signum, _handle)
  _State.installed = True


def _handle(signum: int, frame) -> None:
  name = signal.Signals(signum).name
  if _State.depth > 0 and _State.received is None:
    _State.received = signum  # one line, when the checkpoint is on disk (`Interrupted`)
    return
  if _State.quiet:
    if _State.depth > 0:
      return  # a repeat; the parent escalates with SIGKILL if it must
    exit_now(128 + signum)
  if _State.unwind and _State.depth == 0 and _State.received is None:
    if _State.stopping is None:
      _State.stopping = signum
      if signum == signal.SIGINT:
        raise KeyboardInterrupt
      raise Stopped(signum)
    message = f"{name} again: stopped at once, without cleaning up; re-run the same command"
    print(message, file=sys.stderr, flush=True)
    exit_now(128 + _State.stopping)
  if _State.depth > 0:
    message = f"{name} again: stopped at once; re-run the same command to resume from the "
    message += "newest complete checkpoint"
    code = 128 + _State.received
  elif _State.finished:
    message = f"interrupted by {name} after training had finished (the run is complete)"
    code = 128 + signum
  else:
    message = f"interrupted by {name} before training started; nothing was written"
    code = 128 + signum
  print(message, file=sys.stderr, flush=True)
  exit_now(code)


def exit_now(code: int) -> NoReturn:
  """Ends the process at once (no interpreter shutdown, whose threads could print), having let
  go of its workdir locks: os._exit runs no cleanup, and the lock files would stay behind.
  It imports nothing: a signal can land mid-import (a Ctrl-C at startup did, and importing the
  lock module from here met a half-initialized research.outputs), and a process that has not
  imported the lock module holds no lock."""
  workdir_lock = sys.modules.get("research.workdir_lock")
  if workdir_lock is not None and hasattr(workdir_lock, "release_all"):
    workdir_lock.release_all()
  sys.stdout.flush()
  sys.stderr.flush()
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


def training_done() -> None:
  """Training is over (a finished run reused as it stands): from now on a signal ends the
  process with the line for after training."""
  _State.finished = _State.depth == 0


def stop_if_requested(after: str) -> None:
  """Raises `Interrupted` if a signal was recorded (one that came while a finished run was being
  written down is only recorded): `after` says what was done, e.g. "after training had finished"."""
  if _State.received is not None:
    name = signal.Signals(_State.received).name
    message = f"interrupted by {name} {after}; re-run the same command to go on"
    raise Interrupted(_State.received, None, message)


@contextlib.contextmanager
def whole(after: str) -> Iterator[None]:
  """For a block that writes outputs that must not be left half old and half new: a signal
  inside waits until the block has written everything, then ends it with `stop_if_requested`."""
  with deferred():
    yield
  stop_if_requested(after)


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


def stopping() -> int | None:
  """The signal that raised `Stopped` or KeyboardInterrupt in an `unwind` command (or None)."""
  return _State.stopping


def reset() -> None:
  """Forgets a recorded signal (tests; a process that trains again after handling one)."""
  _State.received = None
  _State.stopping = None
