"""Jobs spread over worker processes, one per core, each pinned: the runner shared by sweeps and
the Table 1 reproduction.

Workers are spawned, not forked, so each starts JAX itself after its own settings: pinned to a
core no other worker has, one XLA thread, the caller's XLA flags, and a compilation cache shared
by all of them (jobs of one kind run the same programs, which then compile once per invocation).
A worker takes the next job when free; give the list longest first. Each finished job is handed
to `on_done` at once, so a caller can write it down and an interrupted invocation resumes.

The parent owns its workers. SIGTERM, SIGINT or SIGHUP to the parent is forwarded to every
worker with a job; each checkpoints at the step it reaches (`loop.train_runs` under
`preemption`, installed quiet in the worker: the parent speaks for all) and exits, and then the
parent raises `preemption.Interrupted` (exit 143, 130 or 129 and one line under
`cli.run_main`). A second signal kills the workers and exits at once. A worker that dies (kill
-9, a crash) or a job that raises stops the others the same way, then `WorkerDied` (one line
naming the job) or the job's error. No worker outlives its parent: each asks the kernel for
SIGTERM when its parent dies (Linux `PR_SET_PDEATHSIG`; elsewhere a thread watches the parent),
so it checkpoints and exits even after a kill -9 of the parent. The signals are blocked while a
worker starts, so one that comes before the worker's handlers are in place waits for them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Hashable, Iterator, NoReturn, Sequence

from research.errors import UserError
from research.training import preemption

QUIT_SECONDS = 10.0  # how long an idle worker may take to leave before it is killed


class WorkerDied(UserError, RuntimeError):
  """A worker process ended without an answer (kill -9, a crash); the others were stopped."""


class _InWorker(Exception):
  """The traceback of a job's error, as its worker printed it (the cause of the error raised)."""


def run_jobs(
  fn: Callable[..., Any],
  jobs: Sequence[tuple[Hashable, tuple]],
  cores: Sequence[int],
  on_done: Callable[[Hashable, Any], str] | None = None,
  xla_flags: str = "",
  compilation_cache: str = "",
  desc: str = "jobs",
) -> dict[Hashable, Any]:
  """Calls `fn(*args)` for each `(name, args)` of `jobs` on one worker per core.

  `fn` must be importable by name (a module-level function). Results come back keyed by job
  name, in the order they finished; `on_done(name, result)` runs in this process as each one
  finishes and returns the progress bar's note. A job's error propagates once the other
  workers have stopped; a signal raises `preemption.Interrupted` (module docstring). Call it
  from the main thread: the signals are handled there, and the workers' parent-death signal
  fires when the thread that started them ends.
  """
  from tqdm.auto import tqdm

  done: dict[Hashable, Any] = {}
  if not jobs:
    return done
  if not cores:
    raise ValueError("no cores to run jobs on")
  todo = list(jobs)  # in the caller's order: longest first
  pool = _Pool(len(todo))
  with pool.handling_signals(), tqdm(total=len(todo), desc=desc, unit="job") as bar:
    pool.bar = bar
    try:
      pool.start(fn, cores[: len(todo)], xla_flags, compilation_cache)
      for worker in pool.workers:
        pool.give(worker, todo.pop(0) if todo and pool.stop_signal is None else None)
      while pool.busy():
        for worker, name, reply in pool.replies():
          if reply[0] == "done":
            done[name] = reply[1]
            note = on_done(name, reply[1]) if on_done else ""
            bar.update(1)
            if note:
              bar.set_postfix_str(note)
          pool.give(worker, todo.pop(0) if todo and pool.stop_signal is None else None)
    except BaseException:
      pool.stop(signal.SIGTERM)  # the others checkpoint before the error goes on
      pool.drain()
      raise
    finally:
      pool.close()
  pool.raise_outcome(len(done))
  return done


@dataclasses.dataclass
class _Worker:
  process: Any  # multiprocessing's Process
  conn: Any  # the parent's end of its pipe
  job: tuple[Hashable, tuple] | None = None  # (name, args) while it runs one


class _Pool:
  """The parent's side: its workers, the job each runs, and why it is stopping."""

  def __init__(self, jobs: int):
    self.jobs = jobs
    self.workers: list[_Worker] = []
    self.stop_signal: int | None = None  # set once, when the workers are told to stop
    self.received: int | None = None  # the first signal this process received
    self.checkpointed = 0  # runs saved at the stop
    self.unsaved = 0  # jobs stopped with nothing to save
    self.failure: tuple[BaseException, str] | None = None  # the first job's error, traceback
    self.dead: tuple[Hashable, str] | None = None  # the first worker that died, and how
    self.bar: Any = None  # the progress bar, ended before a line of ours

  def start(self, fn: Callable, cores: Sequence[int], xla_flags: str, cache: str) -> None:
    """One spawned worker per core, started with the signals blocked (module docstring)."""
    import multiprocessing as mp
    from multiprocessing import resource_tracker

    from research.training.worker_process import serve

    ctx = mp.get_context("spawn")
    resource_tracker.ensure_running()  # it unblocks SIGINT and SIGTERM when it starts
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, preemption.HANDLED)
    try:
      for core in cores:
        conn, child = ctx.Pipe()
        args = (fn, child, core, xla_flags, cache, os.getpid())
        process = ctx.Process(target=serve, args=args, name=f"worker-{core}")
        process.start()
        child.close()  # the worker's end: its death is an end-of-file here
        self.workers.append(_Worker(process, conn))
    finally:
      signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

  def busy(self) -> list[_Worker]:
    return [w for w in self.workers if w.job is not None]

  def give(self, worker: _Worker, job: tuple[Hashable, tuple] | None) -> None:
    """Sends `job` to the worker, or None: it has no more and leaves."""
    worker.job = job
    try:
      worker.conn.send(job[1] if job else None)
    except OSError:  # it died: its sentinel says so
      if job is None:
        worker.job = None

  def replies(self) -> list[tuple[_Worker, Hashable, tuple]]:
    """Waits for a busy worker to answer or die: (worker, job name, reply), its job cleared.
    A reply is ("done", result), ("stopped", signal, runs), ("failed", error, traceback) or,
    for a worker gone without one, ("died", exit code)."""
    from multiprocessing.connection import wait

    busy = self.busy()
    ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
    answered = []
    for worker in busy:
      if worker.conn in ready or worker.process.sentinel in ready:
        name, worker.job = worker.job[0], None
        reply = _receive(worker)
        self._note(name, reply)
        answered.append((worker, name, reply))
    return answered

  def _note(self, name: Hashable, reply: tuple) -> None:
    """What a reply means for the others: a stop, a failure, a death."""
    kind = reply[0]
    if kind == "stopped":
      self.checkpointed += reply[2]
      self.stop(reply[1])  # signalled directly (a process group's signal): stop the rest too
    elif kind == "failed":
      self.failure = self.failure or (reply[1], reply[2])
      self.stop(signal.SIGTERM)
    elif kind == "died":
      signum = _signal_of(reply[1])
      if signum is not None:  # stopped by a signal before it had anything to save
        self.unsaved += 1
        self.stop(signum)
      else:
        self.dead = self.dead or (name, _how(reply[1]))
        self.stop(signal.SIGTERM)

  def stop(self, signum: int) -> None:
    """Forwards `signum` to every busy worker, once; later calls do nothing."""
    if self.stop_signal is not None:
      return
    self.stop_signal = signum
    for worker in self.busy():
      _kill(worker, signum)

  def drain(self) -> None:
    """Waits for every busy worker to answer or die (after `stop`)."""
    while self.busy():
      self.replies()

  def close(self) -> None:
    """Every worker gone: told to leave, then waited for; killed if it does not."""
    for worker in self.workers:
      if worker.job is None:
        self.give(worker, None)
    deadline = time.monotonic() + QUIT_SECONDS
    for worker in self.workers:
      worker.process.join(max(0.0, deadline - time.monotonic()))
      if worker.process.exitcode is None:
        _kill(worker, signal.SIGKILL)
        worker.process.join()
      worker.conn.close()

  @contextlib.contextmanager
  def handling_signals(self) -> Iterator[None]:
    """SIGTERM, SIGINT and SIGHUP: the first stops the workers (forwarded), a second kills them
    and ends the process at once. The previous handlers come back after the block."""
    if threading.current_thread() is not threading.main_thread():
      yield
      return
    previous = {s: signal.getsignal(s) for s in preemption.HANDLED}
    for signum in preemption.HANDLED:
      signal.signal(signum, self._on_signal)
    try:
      yield
    finally:
      for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

  def _on_signal(self, signum: int, frame) -> None:
    self.received = self.received or signum
    if self.stop_signal is None:
      self.stop(signum)
      return
    for worker in self.workers:
      _kill(worker, signal.SIGKILL)
    if self.bar is not None:
      self.bar.close()  # its line ends: ours starts on its own
    name = signal.Signals(signum).name
    _exit_now(
      f"{name} while stopping: the workers were killed at once; re-run the same command to "
      f"resume from each run's newest complete checkpoint",
      128 + self.received,
    )

  def raise_outcome(self, finished: int) -> None:
    """After the workers are gone: the job's error, `WorkerDied`, or `Interrupted`."""
    if self.failure is not None:
      error, text = self.failure
      if isinstance(error, UserError):
        raise error  # its one line
      raise error from _InWorker(text)
    if self.stop_signal is None:
      return
    parts = [f"{self.checkpointed} run(s) checkpointed"] if self.checkpointed else []
    if self.unsaved:
      parts.append(f"{self.unsaved} job(s) stopped with nothing to save")
    if finished:
      parts.append(f"{finished} of {self.jobs} job(s) finished")
    if self.dead is not None:
      name, how = self.dead
      others = f"; the others stopped ({', '.join(parts)})" if parts else ""
      raise WorkerDied(
        f"the worker running {name} {how}{others}; re-run the same command to resume"
      )
    name = signal.Signals(self.stop_signal).name
    raise preemption.Interrupted(
      self.stop_signal,
      None,
      f"interrupted by {name}: {', '.join(parts) or 'no job had started'}; re-run the same "
      "command to resume",
      self.checkpointed,
    )


def _receive(worker: _Worker) -> tuple:
  """The worker's reply, or ("died", exit code) when it ended without one."""
  try:
    if worker.conn.poll():
      return worker.conn.recv()
  except (EOFError, OSError):
    pass
  worker.process.join(QUIT_SECONDS)  # its end of the pipe is closed: it is exiting
  if worker.process.exitcode is None:
    _kill(worker, signal.SIGKILL)
    worker.process.join()
  return ("died", worker.process.exitcode)


def _kill(worker: _Worker, signum: int) -> None:
  if worker.process.pid is not None and worker.process.exitcode is None:
    try:
      os.kill(worker.process.pid, signum)
    except ProcessLookupError:
      pass


def _signal_of(exit_code: int) -> int | None:
  """The handled signal a quiet worker exited on (128 + signal), or None."""
  signum = exit_code - 128 if exit_code and exit_code > 128 else None
  return signum if signum in preemption.HANDLED else None


def _how(exit_code: int | None) -> str:
  if exit_code is not None and exit_code < 0:
    return f"was killed by {signal.Signals(-exit_code).name}"
  return f"died with exit status {exit_code}"


def _exit_now(line: str, code: int) -> NoReturn:
  print(line, file=sys.stderr, flush=True)
  preemption.exit_now(code)


def slice_count(work: float, total: float, workers: int, pieces_per_worker: int) -> int:
  """Into how many slices one group's `work` is cut, so that no slice exceeds a worker's share
  of `total` divided by `pieces_per_worker` (more pieces even out the cores' finishing times;
  fewer keep more runs side by side, which is cheaper per run)."""
  if workers <= 1:
    return 1
  cap = total / (pieces_per_worker * workers)
  return max(1, math.ceil(work / cap - 1e-9))


def split(items: Sequence, parts: int) -> list[list]:
  """`items` in `parts` contiguous slices whose lengths differ by at most one."""
  parts = max(1, min(parts, len(items)))
  q, r = divmod(len(items), parts)
  bounds = [0]
  for i in range(parts):
    bounds.append(bounds[-1] + q + (i < r))
  return [list(items[a:b]) for a, b in zip(bounds, bounds[1:])]
