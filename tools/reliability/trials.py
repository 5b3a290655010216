"""The signal trials: kill -9, SIGTERM (preemption) and Ctrl-C at random moments, then resume.

Each trial starts the campaign's training command, waits for a moment drawn from a seeded RNG
(during startup, somewhere in training, or while Orbax is writing a checkpoint), signals the
process group, judges what the interrupted run did (exit status, time to exit, its stderr, the
checkpoint and events it left), re-runs the same command to the end, and compares the result
bitwise with the uninterrupted reference (`harness.compare`).

The contract judged (README, "Runs that survive"): SIGTERM or a first Ctrl-C during training
finishes the chunk, saves a checkpoint at that step, prints one line `interrupted by SIGTERM at
step N; ...` and exits 143 (SIGINT: 130) within seconds, N being the newest checkpoint and the
last train/loss step; before training has written anything it exits at once with one line; a
second Ctrl-C exits at once (130) and the next run still ends bitwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import time
from typing import Any, Callable

import numpy as np

from tools.reliability.harness import (
  Launch,
  Outcome,
  TrialResult,
  TrialSetup,
  compare,
  copy_cache,
  read_outcome,
  readable,
  run_to_end,
  saving,
  steps_on_disk,
  train_losses,
  wait_until,
)

SIGTERM_EXIT_SECONDS = 10.0  # the contract: a preempted run is gone within this
HANG_SECONDS = 30.0  # no exit this long after a signal is a hang (then kill -9)
LINE = re.compile(r"interrupted by (SIGTERM|SIGINT) at step (\d+)")
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


@dataclasses.dataclass(frozen=True)
class Timeline:
  """When things happen in an uninterrupted run, measured on the reference (seconds from start)."""

  first_write: float  # config.json appears: the end of startup
  first_save: float  # the first checkpoint save begins
  end: float  # the process exits
  saves: int  # checkpoints written

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Moment:
  """When to signal: `startup` (`delay` seconds after the start), `training` (`delay` seconds
  after the launch's `save`-th checkpoint is finished: computing the next chunk, evaluating,
  logging) or `mid_save` (`delay` seconds after its `save`-th save begins, while Orbax writes).
  Counted in saves, not seconds, so a slower machine moves the moments with the run."""

  where: str
  delay: float
  save: int = 0


@dataclasses.dataclass
class Context:
  """What every trial shares: the command, the reference, the timeline; and its own lot."""

  setup: TrialSetup
  reference: Outcome
  timeline: Timeline
  directory: str  # this trial's own directory (workdir, logs, cache copy)
  rng: np.random.Generator
  core: int | None
  reference_dir: str = ""  # the reference run's workdir (its files, as an uninterrupted run ends)
  sweep: Any = None  # sweep_runs.SweepReference, where a trial runs scripts/sweep.py

  @property
  def workdir(self) -> str:
    return os.path.join(self.directory, "run")

  def launch(self, name: str, cache: str) -> Launch:
    return Launch(
      self.setup.command(self.workdir),
      self.setup.env(cache),
      os.path.join(self.directory, name),
      self.core,
    )


@dataclasses.dataclass(frozen=True)
class Scenario:
  """One named trial of the concurrent, storage and sweep_signals kinds: `run(ctx, index)`
  judges it; `sweep` says it needs the uninterrupted sweep's reference."""

  name: str
  run: Callable[[Context, int], TrialResult]
  sweep: bool = False


def draw_moment(ctx: Context, where: str) -> Moment:
  """A moment for the next launch among the saves it has left (a resumed run has fewer)."""
  if where == "startup":
    return Moment("startup", float(ctx.rng.uniform(0, ctx.timeline.first_write)))
  done = max(steps_on_disk(ctx.workdir), default=0)
  left = (ctx.setup.num_steps - done) // ctx.setup.checkpoint_every
  save = int(ctx.rng.integers(0, max(1, int(0.8 * left))))
  return Moment(where, float(ctx.rng.uniform(0, 0.02)), save)


def reach(ctx: Context, launch: Launch, moment: Moment) -> bool:
  """Waits for `moment`; False when the run exited first."""
  start = launch.started
  if moment.where != "startup":
    before = set(steps_on_disk(ctx.workdir))
    previous, begun, finished = _tmp_ids(ctx.workdir), [0], set()

    def due() -> bool:  # counts arrivals: Orbax deletes all but the newest steps as it goes
      now = _tmp_ids(ctx.workdir)
      begun[0] += len(now - previous)
      previous.clear()
      previous.update(now)
      if moment.where == "training":
        finished.update(set(steps_on_disk(ctx.workdir)) - before)
        return len(finished) > moment.save
      return begun[0] > moment.save and bool(now)

    if not wait_until(launch, due, 120):
      return False
    start = time.monotonic()
  wait_until(launch, lambda: time.monotonic() >= start + moment.delay, moment.delay + 1)
  return launch.poll() is None


def _tmp_ids(workdir: str) -> set[tuple[str, int]]:
  """Orbax's temporary directories by name and inode: Orbax re-creates the one a killed save
  left under the same name, so only the inode tells the new save from the leftover."""
  ids = set()
  for name in saving(workdir):
    with contextlib.suppress(OSError):
      ids.add((name, os.stat(os.path.join(workdir, "checkpoints", name)).st_ino))
  return ids


def snapshot(workdir: str) -> tuple[set[str], set[tuple[str, int]]]:
  """The event files and Orbax temporary directories there are before a launch."""
  try:
    events = {n for n in os.listdir(workdir) if n.startswith("events.out.tfevents")}
  except OSError:
    events = set()
  return events, _tmp_ids(workdir)


def landed(workdir: str, before: tuple[set[str], set[tuple[str, int]]]) -> str:
  """Where a signal to the launch that began at `before` (a snapshot) actually landed: in its
  startup (no event file of its own yet), mid-save (a save of its own in progress) or training."""
  events, tmp = snapshot(workdir)
  if not events - before[0]:
    return "startup"
  return "mid_save" if tmp - before[1] else "training"


def kill9_trial(ctx: Context, index: int) -> TrialResult:
  """One to three kill -9 at random moments, then the same command to the end."""
  t0 = time.monotonic()
  cache = copy_cache(ctx.setup, ctx.directory)
  wheres = ctx.rng.choice(["startup", "training", "mid_save"], int(ctx.rng.integers(1, 4)))
  kills, why = [], []
  for i, where in enumerate(wheres):
    moment = draw_moment(ctx, str(where))
    before = snapshot(ctx.workdir)
    launch = ctx.launch(f"kill{i}", cache)
    if not reach(ctx, launch, moment):
      launch.wait(1)
      kills.append({"intended": moment.where, "landed": f"none: the run exited {launch.poll()}"})
      break
    at = landed(ctx.workdir, before)
    launch.kill()
    kills.append({"intended": moment.where, "landed": at, "steps": steps_on_disk(ctx.workdir)})
  final, lines, seconds = finish(ctx, cache)
  why += final
  details = {"kills": kills, "resume_stderr": lines[-5:], "resume_seconds": round(seconds, 2)}
  return TrialResult("kill9", index, not why, time.monotonic() - t0, why, details)


def signal_trial(ctx: Context, index: int, kind: str) -> TrialResult:
  """`sigterm`, `sigterm_startup` or `sigint`: one signal (Ctrl-C: sometimes a second 0-1 s
  later), the interrupted run judged, then the same command to the end.

  A training moment that the run outlived (it finished before the signal) tells nothing: the
  trial is drawn again in a fresh workdir, up to three times.
  """
  t0 = time.monotonic()
  sig = signal.SIGINT if kind == "sigint" else signal.SIGTERM
  if kind == "sigterm_startup":
    wheres = ["startup"]
  elif kind == "sigterm":
    wheres = ["training", "mid_save"]
  else:
    wheres = ["startup", "training", "mid_save"]
  where = str(ctx.rng.choice(wheres))
  second_delay = None
  if kind == "sigint" and ctx.rng.random() < 0.5:
    # Half the second presses come within 0.3 s, while the first one's checkpoint is written.
    second_delay = float(
      ctx.rng.uniform(0, 0.3) if ctx.rng.random() < 0.5 else ctx.rng.uniform(0.3, 1)
    )
  cache = copy_cache(ctx.setup, ctx.directory)
  missed = []
  for attempt in range(3):
    moment = draw_moment(ctx, where)
    before = snapshot(ctx.workdir)
    launch = ctx.launch(f"attempt{attempt}", cache)
    if reach(ctx, launch, moment):
      break
    rc = launch.wait(HANG_SECONDS)
    missed.append({"moment": dataclasses.asdict(moment), "exit_code": rc})
    if rc is None:
      launch.kill()
    shutil.rmtree(ctx.workdir, ignore_errors=True)
  else:
    why = ["the run exited before each of 3 drawn moments; nothing was tested"]
    return TrialResult(kind, index, False, time.monotonic() - t0, why, {"missed": missed})
  at = landed(ctx.workdir, before)
  sent = launch.signal(sig)
  details: dict[str, Any] = {"intended": where, "landed": at, "moment": dataclasses.asdict(moment)}
  if missed:
    details["missed"] = missed
  second = None
  if second_delay is not None:
    if launch.wait(second_delay) is None:
      second = launch.signal(signal.SIGINT)
      details["second_sigint_after"] = round(second_delay, 3)
    else:
      details["second_sigint_after"] = None  # the run was gone before it was due
  rc = launch.wait(max(0.0, sent + HANG_SECONDS - time.monotonic()))
  exit_seconds = time.monotonic() - sent
  if second is not None and rc is not None:
    details["exit_after_second_seconds"] = round(time.monotonic() - second, 3)
  why = []
  if rc is None:
    launch.kill()
    details["hang"] = True
    why.append(f"hang: no exit {HANG_SECONDS:.0f} s after {sig.name}; killed with -9")
  else:
    details["hang"] = False
    details["exit_seconds"] = round(exit_seconds, 3)
    details["exit_code"] = rc
    lines = launch.stderr_lines()
    details["stderr"] = lines[-4:]
    two = details.get("second_sigint_after") is not None
    why += _judge_interrupted(ctx, sig, rc, exit_seconds, lines, where != "startup", two, details)
  final, lines, seconds = finish(ctx, cache)
  why += final
  details["resume_stderr"] = lines[-5:]
  details["resume_seconds"] = round(seconds, 2)
  return TrialResult(kind, index, not why, time.monotonic() - t0, why, details)


def _judge_interrupted(
  ctx: Context,
  sig: signal.Signals,
  rc: int,
  exit_seconds: float,
  lines: list[str],
  in_training: bool,
  two: bool,
  details: dict[str, Any],
) -> list[str]:
  """The interrupted run against the contract; the checks of a run that stopped at a step.

  Every moment lies before the run's last fifth of saves, so a run that exits 0 after the
  signal ignored it."""
  why = []
  if rc != EXIT_CODES[sig]:
    why.append(f"exit status {rc} after {sig.name}, expected {EXIT_CODES[sig]}")
  if sig == signal.SIGTERM and exit_seconds > SIGTERM_EXIT_SECONDS:
    why.append(f"exit {exit_seconds:.1f} s after SIGTERM (limit {SIGTERM_EXIT_SECONDS:.0f} s)")
  allowed = 2 if two else 1
  if not 1 <= len(lines) <= allowed:
    why.append(f"{len(lines)} stderr lines after {sig.name}, expected 1{' or 2' if two else ''}")
  why += readable(lines)
  match = next((m for m in map(LINE.search, lines) if m), None)
  if match is None:
    if in_training and not two:
      why.append(f"no 'interrupted by {sig.name} at step N' line")
    return why
  n = int(match.group(2))
  details["step"] = n
  if match.group(1) != sig.name:
    why.append(f"the line names {match.group(1)}, the signal was {sig.name}")
  if two:
    return why  # a second Ctrl-C may cut the save short: the resume judges it
  newest = max(steps_on_disk(ctx.workdir), default=0)
  last = max(train_losses(ctx.workdir), default=0)
  details["newest_checkpoint"], details["last_event_step"] = newest, last
  if newest != n:
    why.append(f"the line says step {n}, the newest checkpoint is {newest}")
  if last != n:
    why.append(f"the line says step {n}, the last train/loss event is step {last}")
  if os.path.exists(os.path.join(ctx.workdir, "summary.json")):
    why.append("an interrupted run wrote summary.json")
  return why


def finish(ctx: Context, cache: str) -> tuple[list[str], list[str], float]:
  """The same command to the end after the interruptions: it must exit 0 and end bitwise where
  the reference ends. Returns (failed checks, its stderr lines, its seconds)."""
  command, env = ctx.setup.command(ctx.workdir), ctx.setup.env(cache)
  rc, lines, seconds = run_to_end(command, env, os.path.join(ctx.directory, "final"), ctx.core)
  if rc is None:
    return ["the resumed run hung (killed with -9)"], lines, seconds
  if rc != 0:
    last = lines[-1] if lines else "(no stderr)"
    return [f"the resumed run exited {rc}: {last}"], lines, seconds
  outcome = read_outcome(ctx.workdir)
  why = readable(lines) + compare(ctx.reference, outcome, ctx.setup.num_steps)
  return why, lines, seconds
