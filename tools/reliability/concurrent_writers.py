"""Concurrent writers: two commands on one workdir, a failed start beside another process's files,
and a lock left by a killed holder.

- `two_trains` (issue 24, F1): the campaign's training command, then, once it has started
  writing, a second `scripts/train.py` on the same workdir with another learning rate. The
  second must exit 1 with one `error:` line naming the first's PID; the first must end bitwise
  where the reference ends, with the reference's config.json and no file of the second's.
- `two_sweeps` (F2): a sweep (tools/reliability/sweep_runs.py), then, once both its runs have a
  checkpoint, the same sweep again. The second must exit 1 with one `error:` line, delete
  nothing of the first's, and the first must finish (no hang) and end bitwise.
- `failed_start_others` (F3): a start that diverges before its first checkpoint (learning rate
  1e20: the loss is NaN at step 2) in an existing workdir, while another process writes
  `other.log` and `other_job/` there. It must exit 1 with one `error:` line, take back what it
  made, and leave every file it did not make; the corrected command then ends bitwise.
- `stale_lock`: the training command killed with -9 once it has a checkpoint; the same command
  must then resume (a lock dies with its holder) and end bitwise.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from tools.reliability import sweep_runs
from tools.reliability.harness import (
  RUN_TIMEOUT,
  Launch,
  TrialResult,
  compare,
  copy_cache,
  read_outcome,
  readable,
  steps_on_disk,
  wait_until,
)
from tools.reliability.trials import Context, Scenario, finish

SECOND_SECONDS = 60.0  # the second writer must be refused within this (its startup included)
EVENTS = "events.out.tfevents"
RUN_FILES = ("config.json", "checkpoints", "summary.json", "summary")  # what a training start makes
DIVERGING = "--config.optimizer.learning_rate=1e20"  # NaN at step 2, long before step 100's save


def two_trains_trial(ctx: Context, index: int) -> TrialResult:
  t0 = time.monotonic()
  details: dict[str, Any] = {"name": "two_trains"}
  cache = copy_cache(ctx.setup, ctx.directory)
  first = ctx.launch("first", cache)
  why: list[str] = []
  config = os.path.join(ctx.workdir, "config.json")
  if not wait_until(first, lambda: os.path.exists(config), RUN_TIMEOUT):
    why.append(f"the first run exited {first.poll()} before it wrote config.json")
    return TrialResult("concurrent", index, False, time.monotonic() - t0, why, details)
  command = ctx.setup.command(ctx.workdir) + ["--config.optimizer.learning_rate=3e-3"]
  second = Launch(command, ctx.setup.env(cache), os.path.join(ctx.directory, "second"), ctx.core)
  why += _judge_refused(second, "the second run", [first.proc.pid], details)
  rc = first.wait(RUN_TIMEOUT)
  if rc != 0:
    lines = first.stderr_lines()
    first.kill()
    why.append(f"the first run exited {rc}: {lines[-1] if lines else '(no stderr)'}")
  else:
    why += [
      f"the first run: {d}"
      for d in compare(ctx.reference, read_outcome(ctx.workdir), ctx.setup.num_steps)
    ]
    why += _untouched(ctx)
  return TrialResult("concurrent", index, not why, time.monotonic() - t0, why, details)


def _untouched(ctx: Context) -> list[str]:
  """The workdir holds what the reference's holds: its config.json, one event file, no name the
  reference lacks."""
  why = []
  with open(os.path.join(ctx.workdir, "config.json"), "rb") as a:
    with open(os.path.join(ctx.reference_dir, "config.json"), "rb") as b:
      if a.read() != b.read():
        why.append("config.json is not the first run's (the second run's config replaced it)")
  names = set(os.listdir(ctx.workdir))
  events = [n for n in names if n.startswith(EVENTS)]
  if len(events) != 1:
    why.append(f"the workdir holds {len(events)} event files, the first run wrote one")
  reference = {n for n in os.listdir(ctx.reference_dir) if not n.startswith(EVENTS)}
  extra = sorted(n for n in names - reference if not n.startswith(EVENTS))
  if extra:
    why.append(f"the workdir holds what the first run did not write: {', '.join(extra[:3])}")
  return why


def _judge_refused(
  second: Launch, what: str, holders: list[int], details: dict[str, Any]
) -> list[str]:
  """`second` must exit 1 within SECOND_SECONDS with one `error:` line naming one of `holders`."""
  rc = second.wait(SECOND_SECONDS)
  details["second_seconds"] = round(time.monotonic() - second.started, 2)
  details["second_exit_code"] = rc
  if rc is None:
    second.kill()
    return [f"{what} still ran {SECOND_SECONDS:.0f} s after its start (killed with -9)"]
  why = []
  lines = sweep_runs.message_lines(second.stderr_lines())
  details["second_stderr"] = lines[-3:]
  if rc != 1:
    why.append(f"{what} exited {rc}, expected 1 (refused)")
  if len(lines) != 1 or not lines[0].startswith("error: "):
    last = lines[-1][:160] if lines else "nothing"
    why.append(f"{what} wrote {len(lines)} stderr line(s), not one `error:` line (last: {last})")
  elif not any(re.search(rf"\b{pid}\b", lines[0]) for pid in holders):
    why.append(f"{what}'s line names no PID of the holder ({', '.join(map(str, holders))})")
  why += readable(lines)
  return why


def two_sweeps_trial(ctx: Context, index: int) -> TrialResult:
  t0 = time.monotonic()
  details: dict[str, Any] = {"name": "two_sweeps"}
  why: list[str] = []
  first = sweep_runs.launch(ctx.setup, ctx.workdir, os.path.join(ctx.directory, "first"), ctx.core)
  second = None
  try:
    if not wait_until(first, lambda: sweep_runs.checkpointed(ctx.workdir), RUN_TIMEOUT):
      why.append(f"the first sweep exited {first.poll()} before both runs had a checkpoint")
      return TrialResult("concurrent", index, False, time.monotonic() - t0, why, details)
    holders = sweep_runs.alive(first.proc.pid)
    second = sweep_runs.launch(
      ctx.setup, ctx.workdir, os.path.join(ctx.directory, "second"), ctx.core
    )
    why += _judge_refused(second, "the second sweep", holders, details)
    sweep_runs.kill_group(second.proc.pid)
    for run in sweep_runs.RUNS:
      workdir = os.path.join(ctx.workdir, run)
      if not os.path.isfile(os.path.join(workdir, "config.json")) or not steps_on_disk(workdir):
        why.append(f"after the second sweep, {run} lacks its config.json or checkpoints")
    # No hang: the first ends about as long after the refusal as a whole sweep takes.
    limit = ctx.sweep.seconds + 30
    rc = first.wait(max(1.0, second.started + SECOND_SECONDS + limit - time.monotonic()))
    details["first_exit_code"] = rc
    if rc is None:
      why.append(f"hang: the first sweep still ran {limit:.0f} s after the second ended (killed)")
    elif rc != 0:
      lines = sweep_runs.message_lines(first.stderr_lines())
      why.append(f"the first sweep exited {rc}: {lines[-1] if lines else '(no stderr)'}")
    else:
      why += [
        f"the first sweep: {d}"
        for d in sweep_runs.compare_runs(ctx.sweep, ctx.workdir, ctx.setup.num_steps)
      ]
  finally:
    sweep_runs.kill_group(first.proc.pid)
    if second is not None:
      sweep_runs.kill_group(second.proc.pid)
  return TrialResult("concurrent", index, not why, time.monotonic() - t0, why, details)


def failed_start_others_trial(ctx: Context, index: int) -> TrialResult:
  t0 = time.monotonic()
  details: dict[str, Any] = {"name": "failed_start_others"}
  os.makedirs(ctx.workdir)
  ours = {"notes.txt": "the user's notes\n"}
  _write(ctx.workdir, ours)
  # No compilation cache: the start compiles (seconds) between config.json and the NaN, which
  # leaves the other process time to write beside it.
  command = ctx.setup.command(ctx.workdir) + [DIVERGING]
  start = Launch(command, ctx.setup.env(), os.path.join(ctx.directory, "diverging"), ctx.core)
  why: list[str] = []
  if not wait_until(
    start, lambda: os.path.exists(os.path.join(ctx.workdir, "config.json")), RUN_TIMEOUT
  ):
    why.append(f"the diverging start exited {start.poll()} before it wrote config.json")
  else:
    others = {"other.log": "", "other_job/run.log": "another process's job\n"}
    _write(ctx.workdir, others)
    appended = 0
    log = os.path.join(ctx.workdir, "other.log")
    while start.poll() is None and time.monotonic() - start.started < RUN_TIMEOUT:
      try:  # another writer, still writing (never re-creating a file that was deleted)
        with open(log, "r+") as f:
          f.seek(0, os.SEEK_END)
          f.write(f"line {appended}\n")
      except FileNotFoundError:
        break
      others["other.log"] += f"line {appended}\n"
      appended += 1
      time.sleep(0.02)
    details["other_log_lines"] = appended
    ours.update(others)
  rc = start.wait(RUN_TIMEOUT)
  if rc is None:
    start.kill()
  lines = start.stderr_lines()
  details.update(exit_code=rc, stderr=lines[-3:])
  if rc != 1:
    why.append(f"the diverging start exited {rc}, expected 1")
  if len(lines) != 1 or not lines[0].startswith("error: "):
    why.append(f"the diverging start wrote {len(lines)} stderr line(s), not one `error:` line")
  why += readable(lines)
  for rel, text in ours.items():
    path = os.path.join(ctx.workdir, rel)
    if not os.path.isfile(path):
      why.append(f"the failed start deleted {rel}, which it did not make")
    else:
      with open(path) as f:
        if f.read() != text:
          why.append(f"{rel} changed under the failed start")
  left = sorted(n for n in os.listdir(ctx.workdir) if n in RUN_FILES or n.startswith(EVENTS))
  if left:
    why.append(f"the failed start left {', '.join(left)} behind")
  final, lines, seconds = finish(ctx, copy_cache(ctx.setup, ctx.directory))
  why += [f"the corrected command: {w}" for w in final]
  details["resume_seconds"] = round(seconds, 2)
  return TrialResult("concurrent", index, not why, time.monotonic() - t0, why, details)


def _write(root: str, files: dict[str, str]) -> None:
  for rel, text in files.items():
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(text)


def stale_lock_trial(ctx: Context, index: int) -> TrialResult:
  t0 = time.monotonic()
  details: dict[str, Any] = {"name": "stale_lock"}
  cache = copy_cache(ctx.setup, ctx.directory)
  killed = ctx.launch("killed", cache)
  why: list[str] = []
  if not wait_until(killed, lambda: bool(steps_on_disk(ctx.workdir)), RUN_TIMEOUT):
    why.append(f"the run exited {killed.poll()} before its first checkpoint")
    return TrialResult("concurrent", index, False, time.monotonic() - t0, why, details)
  killed.kill()
  details["killed_at"] = steps_on_disk(ctx.workdir)[-1:]
  final, lines, seconds = finish(ctx, cache)
  why += final
  details.update(resume_stderr=lines[-3:], resume_seconds=round(seconds, 2))
  return TrialResult("concurrent", index, not why, time.monotonic() - t0, why, details)


TRIALS = (
  Scenario("two_trains", two_trains_trial),
  Scenario("two_sweeps", two_sweeps_trial, sweep=True),
  Scenario("failed_start_others", failed_start_others_trial),
  Scenario("stale_lock", stale_lock_trial),
)
QUICK = ("two_trains", "failed_start_others")
