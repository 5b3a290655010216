"""Sweeps as the campaign starts them, the processes they leave, and how they must end.

A sweep trial runs `scripts/sweep.py --sweep seed=0,1 --workers 1` with the campaign's training
flags: the parent spawns one worker process, which trains both runs side by side (one vmapped
program) into `<workdir>/seed=0` and `<workdir>/seed=1`. Two uninterrupted sweeps, side by side
when two cores are free, are the reference: they must agree with each other bitwise, run by run,
and every interrupted and re-run sweep must end where they end (`compare_runs`).

Every process a sweep starts stays in its process group (the launch's own session), also once
its parent is gone, so the group is what "no process left" is judged on (`alive`), and what a
trial kills at its end (`kill_group`). The sweep's progress bar writes to stderr; what a user
must read is stderr without it (`message_lines`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import re
import signal
import sys
import time
from typing import Callable, Sequence

from tools import REPO
from tools.reliability.harness import (
  RUN_TIMEOUT,
  Launch,
  Outcome,
  TrialSetup,
  compare,
  read_outcome,
  readable,
  run_to_end,
  steps_on_disk,
)

RUNS = ("seed=0", "seed=1")  # the run directories of `--sweep seed=0,1`
PROGRESS_BAR = re.compile(r"^[^:|]{0,40}:\s*\d{1,3}%\|")  # tqdm: "sweep:  50%|█████  | 1/2 ..."


@dataclasses.dataclass(frozen=True)
class SweepReference:
  """How an uninterrupted sweep ends: each run's outcome, and its wall time from start to exit."""

  outcomes: dict[str, Outcome]
  seconds: float


def command(setup: TrialSetup, workdir: str) -> list[str]:
  """The sweep every sweep trial runs: the campaign's training flags, seeds 0 and 1, 1 worker."""
  script = os.path.join(REPO, "scripts", "sweep.py")
  flags = [f"--config.{o}" for o in setup.overrides]
  sweep = ["--sweep", "seed=0,1", "--workers", "1", "--workdir", workdir]
  return [sys.executable, script, "--config", setup.config, *sweep, *flags]


def launch(setup: TrialSetup, workdir: str, log: str, core: int | None) -> Launch:
  return Launch(command(setup, workdir), setup.env(), log, core)


def prepare_reference(
  root: str, setup: TrialSetup, cores: Sequence[int], progress: Callable[[str], None] = print
) -> SweepReference:
  """Two uninterrupted sweeps (side by side on two cores, else one after the other) that must
  agree bitwise; raises RuntimeError when either fails or they differ."""
  t = time.monotonic()
  names = ("sweep_reference", "sweep_reference_2")

  def one(i: int) -> tuple[int | None, list[str], float]:
    workdir = os.path.join(root, names[i])
    return run_to_end(command(setup, workdir), setup.env(), workdir + "_log", cores[i % len(cores)])

  with concurrent.futures.ThreadPoolExecutor(min(2, len(cores))) as pool:
    ends = list(pool.map(one, range(2)))
  for name, (rc, lines, _) in zip(names, ends):
    if rc != 0:
      raise RuntimeError(f"the reference sweep {name} exited {rc}: {lines[-1:] or '(no stderr)'}")
  outcomes = [read_outcomes(os.path.join(root, name)) for name in names]
  differ = []
  for run in RUNS:
    if outcomes[0][run].summary is None or outcomes[0][run].error:
      raise RuntimeError(f"the reference sweep left no summary or checkpoint in {run}")
    differ += [f"{run}: {d}" for d in compare(outcomes[0][run], outcomes[1][run], setup.num_steps)]
  if differ:
    raise RuntimeError(f"two uninterrupted sweeps differ ({'; '.join(differ[:3])})")
  progress(f"{'sweep_reference':16s} done in {time.monotonic() - t:5.1f} s")
  return SweepReference(outcomes[1], min(seconds for _, _, seconds in ends))


def read_outcomes(workdir: str) -> dict[str, Outcome]:
  return {run: read_outcome(os.path.join(workdir, run)) for run in RUNS}


def compare_runs(reference: SweepReference, workdir: str, num_steps: int) -> list[str]:
  """Every way a sweep's runs end differently from the reference's; empty when bitwise equal."""
  why = []
  for run, outcome in read_outcomes(workdir).items():
    why += [f"{run}: {d}" for d in compare(reference.outcomes[run], outcome, num_steps)]
  return why


def checkpointed(workdir: str) -> bool:
  """Every run of the sweep has a finished checkpoint: both are training."""
  return all(steps_on_disk(os.path.join(workdir, run)) for run in RUNS)


def finish(
  setup: TrialSetup, reference: SweepReference, workdir: str, log: str, core: int | None
) -> tuple[list[str], list[str], float]:
  """The same sweep again, to the end: exit 0, stderr readable, every run bitwise as the
  reference's. Returns (failed checks, its stderr without the progress bar, its seconds)."""
  launched = launch(setup, workdir, log, core)
  rc = launched.wait(RUN_TIMEOUT)
  seconds = time.monotonic() - launched.started
  try:
    lines = message_lines(launched.stderr_lines())
    if rc is None:
      return ["the re-run sweep hung (killed with -9)"], lines, seconds
    if rc != 0:
      return (
        [f"the re-run sweep exited {rc}: {lines[-1] if lines else '(no stderr)'}"],
        lines,
        seconds,
      )
    why = readable(lines) + compare_runs(reference, workdir, setup.num_steps)
    return why, lines, seconds
  finally:
    kill_group(launched.proc.pid)


def message_lines(lines: Sequence[str]) -> list[str]:
  """stderr lines without the progress bar's redraws."""
  return [line for line in lines if not PROGRESS_BAR.match(line)]


# --- Processes --------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
  """(state, parent pid, process group) of a live process, None when gone."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
  except (OSError, IndexError):
    return None
  return fields[0], int(fields[1]), int(fields[2])


def _pids() -> list[int]:
  return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def alive(group: int) -> list[int]:
  """The processes of process group `group` that still run (zombies are gone already)."""
  out = []
  for pid in _pids():
    st = _stat(pid)
    if st is not None and st[2] == group and st[0] != "Z":
      out.append(pid)
  return out


def workers(parent: int) -> list[int]:
  """The live worker processes a sweep parent spawned (not multiprocessing's resource tracker)."""
  out = []
  for pid in _pids():
    st = _stat(pid)
    if st is None or st[1] != parent or st[0] == "Z":
      continue
    with contextlib.suppress(OSError):
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        if b"spawn_main" in f.read():
          out.append(pid)
  return sorted(out)


def wait_gone(group: int, deadline: float) -> list[int]:
  """Waits until no process of `group` runs or `deadline` (time.monotonic) passes; those left."""
  left = alive(group)
  while left and time.monotonic() < deadline:
    time.sleep(0.05)
    left = alive(group)
  return left


def kill_group(group: int) -> None:
  """kill -9 to whatever still runs in `group` (a launch's whole session), e.g. orphaned workers
  whose parent was already reaped, which `Launch.kill` no longer reaches."""
  if alive(group):
    with contextlib.suppress(ProcessLookupError):
      os.killpg(group, signal.SIGKILL)
    wait_gone(group, time.monotonic() + 5)
