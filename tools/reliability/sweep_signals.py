"""Signals to a sweep: its parent interrupted, a worker killed, the parent killed, then resumed.

Each trial starts `scripts/sweep.py --sweep seed=0,1 --workers 1` (tools/reliability/sweep_runs.py),
waits until both runs have a checkpoint, and then, a moment later drawn from the trial's RNG:

- `sigterm`, `sigint`, `sighup`: that signal to the parent process alone (as `kill` or a closed
  terminal sends it), which must pass it on to its worker;
- `ctrl_c`: SIGINT to the whole process group, as Ctrl-C in a terminal sends it;
- `kill9_worker`: kill -9 to the worker process;
- `kill9_parent`: kill -9 to the parent.

The contract judged (issue 24, item 3): after a signal the parent exits 143, 130 or 129 (128 +
the signal) within 10 s with one stderr line (the progress bar aside), no process of the sweep
is left, and each run stopped at a checkpoint (its newest checkpoint is its last train/loss
step); a killed worker is reported in one line with a non-zero exit within 10 s and no process
left; once the parent is killed, its workers are gone within 10 s. Then the same sweep again
must finish and end every run bitwise where an uninterrupted sweep ends.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from tools.reliability import sweep_runs
from tools.reliability.harness import TrialResult, readable, steps_on_disk, train_losses, wait_until
from tools.reliability.trials import Context, Scenario

EXIT_SECONDS = 10.0  # the contract: the sweep (and every process it started) gone within this
HANG_SECONDS = 30.0  # no exit this long after a signal is a hang (then kill -9)
READY_SECONDS = 120.0  # for both runs' first checkpoint
SIGNALS = {  # trial -> (signal, exit status, sent to the whole group)
  "sigterm": (signal.SIGTERM, 143, False),
  "sigint": (signal.SIGINT, 130, False),
  "sighup": (signal.SIGHUP, 129, False),
  "ctrl_c": (signal.SIGINT, 130, True),
}


def signal_trial(ctx: Context, index: int, name: str) -> TrialResult:
  """One signal mid-run, the stop judged, then the same sweep to the end."""
  sig, code, to_group = SIGNALS[name]
  t0 = time.monotonic()
  details: dict[str, Any] = {
    "name": name,
    "signal": sig.name,
    "to": "group" if to_group else "parent",
  }
  why: list[str] = []
  sweep = sweep_runs.launch(
    ctx.setup, ctx.workdir, os.path.join(ctx.directory, "signalled"), ctx.core
  )
  try:
    if not _reach(ctx, sweep, details, why):
      return _end(ctx, index, t0, why, details, resume=False)
    sent = sweep.signal(sig) if to_group else _kill(sweep.proc.pid, sig)
    why += _judge_stop(sweep, sent, sig.name, code, details)
    why += _judge_runs_stopped(ctx, details)
  finally:
    sweep_runs.kill_group(sweep.proc.pid)
  return _end(ctx, index, t0, why, details)


def kill9_worker_trial(ctx: Context, index: int) -> TrialResult:
  """kill -9 to the worker: one line, a non-zero exit, no process left; then resumed."""
  t0 = time.monotonic()
  details: dict[str, Any] = {"name": "kill9_worker"}
  why: list[str] = []
  sweep = sweep_runs.launch(ctx.setup, ctx.workdir, os.path.join(ctx.directory, "killed"), ctx.core)
  try:
    if not _reach(ctx, sweep, details, why):
      return _end(ctx, index, t0, why, details, resume=False)
    pids = sweep_runs.workers(sweep.proc.pid)
    if not pids:
      why.append("no worker process of the sweep was found to kill")
      return _end(ctx, index, t0, why, details, resume=False)
    sent = _kill(pids[0], signal.SIGKILL)
    why += _judge_stop(sweep, sent, "the worker's kill -9", None, details)
  finally:
    sweep_runs.kill_group(sweep.proc.pid)
  return _end(ctx, index, t0, why, details)


def kill9_parent_trial(ctx: Context, index: int) -> TrialResult:
  """kill -9 to the parent: its workers gone within 10 s; then resumed."""
  t0 = time.monotonic()
  details: dict[str, Any] = {"name": "kill9_parent"}
  why: list[str] = []
  sweep = sweep_runs.launch(ctx.setup, ctx.workdir, os.path.join(ctx.directory, "killed"), ctx.core)
  try:
    if not _reach(ctx, sweep, details, why):
      return _end(ctx, index, t0, why, details, resume=False)
    details["workers"] = len(sweep_runs.workers(sweep.proc.pid))
    sent = _kill(sweep.proc.pid, signal.SIGKILL)
    sweep.wait(5)
    left = sweep_runs.wait_gone(sweep.proc.pid, sent + EXIT_SECONDS)
    details["left_after_10_s"] = len(left)
    if left:
      why.append(
        f"{len(left)} process(es) of the sweep still ran {EXIT_SECONDS:.0f} s after its parent "
        "was killed"
      )
  finally:
    sweep_runs.kill_group(sweep.proc.pid)
  return _end(ctx, index, t0, why, details)


def _reach(ctx: Context, sweep, details: dict[str, Any], why: list[str]) -> bool:
  """Waits until both runs have a checkpoint, then a drawn moment (0-0.2 s); False (and why)
  when the sweep ended or stalled before."""
  if not wait_until(sweep, lambda: sweep_runs.checkpointed(ctx.workdir), READY_SECONDS):
    rc = sweep.poll()
    lines = sweep_runs.message_lines(sweep.stderr_lines())
    why.append(
      f"the sweep {'exited ' + str(rc) if rc is not None else 'stalled'} before both runs had a "
      f"checkpoint: {lines[-1:] or '(no stderr)'}"
    )
    return False
  delay = float(ctx.rng.uniform(0, 0.2))
  details["delay"] = round(delay, 3)
  time.sleep(delay)
  details["steps_at_signal"] = {
    r: steps_on_disk(os.path.join(ctx.workdir, r))[-1:] for r in sweep_runs.RUNS
  }
  if sweep.poll() is not None:
    why.append(f"the sweep exited {sweep.poll()} before the signal: nothing was tested")
    return False
  return True


def _kill(pid: int, sig: int) -> float:
  t = time.monotonic()
  try:
    os.kill(pid, sig)
  except ProcessLookupError:
    pass
  return t


def _judge_stop(sweep, sent: float, what: str, code: int | None, details) -> list[str]:
  """The parent's exit after `what`: status `code` (None: any non-zero), within 10 s, one
  readable line, and no process of the sweep left 10 s after `sent`."""
  why = []
  rc = sweep.wait(max(0.0, sent + HANG_SECONDS - time.monotonic()))
  seconds = time.monotonic() - sent
  if rc is None:
    details["hang"] = True
    why.append(f"hang: the sweep did not exit {HANG_SECONDS:.0f} s after {what}; killed with -9")
    sweep_runs.kill_group(sweep.proc.pid)
    return why
  details.update(hang=False, exit_code=rc, exit_seconds=round(seconds, 3))
  if code is not None and rc != code:
    why.append(f"exit status {rc} after {what}, expected {code}")
  if code is None and rc == 0:
    why.append(f"exit status 0 after {what}")
  if seconds > EXIT_SECONDS:
    why.append(f"exit {seconds:.1f} s after {what} (limit {EXIT_SECONDS:.0f} s)")
  left = sweep_runs.wait_gone(sweep.proc.pid, sent + EXIT_SECONDS)
  details["left_after_10_s"] = len(left)
  if left:
    why.append(f"{len(left)} process(es) of the sweep still ran {EXIT_SECONDS:.0f} s after {what}")
  lines = sweep_runs.message_lines(sweep.stderr_lines())
  details["stderr"] = lines[-4:]
  if len(lines) != 1:
    last = lines[-1][:160] if lines else "nothing"
    why.append(f"{len(lines)} stderr lines after {what}, expected 1 (last: {last})")
  why += readable(lines)
  return why


def _judge_runs_stopped(ctx: Context, details: dict[str, Any]) -> list[str]:
  """Each run stopped at a checkpoint: its newest checkpoint is its last train/loss step."""
  why = []
  ends = {}
  for run in sweep_runs.RUNS:
    workdir = os.path.join(ctx.workdir, run)
    newest, last = max(steps_on_disk(workdir), default=0), max(train_losses(workdir), default=0)
    ends[run] = {"newest_checkpoint": newest, "last_event_step": last}
    if newest == 0:
      why.append(f"{run} has no checkpoint after the stop")
    elif last != newest:
      why.append(f"{run} trained to step {last}, its newest checkpoint is step {newest}")
  details["stopped_at"] = ends
  return why


def _end(
  ctx: Context, index: int, t0: float, why: list[str], details: dict[str, Any], resume: bool = True
) -> TrialResult:
  """The same sweep to the end after the interruption (also when the interruption failed a
  check: the resume is judged on its own); none when nothing was interrupted."""
  if resume:
    final, lines, seconds = sweep_runs.finish(
      ctx.setup, ctx.sweep, ctx.workdir, os.path.join(ctx.directory, "final"), ctx.core
    )
    why = why + final
    details["resume_stderr"] = lines[-5:]
    details["resume_seconds"] = round(seconds, 2)
  return TrialResult("sweep_signals", index, not why, time.monotonic() - t0, why, details)


TRIALS = (
  *(Scenario(n, lambda ctx, i, n=n: signal_trial(ctx, i, n), sweep=True) for n in SIGNALS),
  Scenario("kill9_worker", kill9_worker_trial, sweep=True),
  Scenario("kill9_parent", kill9_parent_trial, sweep=True),
)
QUICK = ("sigterm", "kill9_parent")  # the signal passed on; no worker outlives its parent
