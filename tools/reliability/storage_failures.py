"""Storage that fails under a run: read-only checkpoints, a full disk, a file where a directory
should be.

- `readonly_checkpoints` (issue 24, F5): once the training command has a checkpoint, its
  `checkpoints` directory is bind-mounted read-only over itself. The run must exit 1 with one
  `error:` line within 10 s (it had stalled 308 s); once the mount is lifted, the same command
  must resume and end bitwise where the reference ends.
- `disk_full`: the workdir is a 600 KiB tmpfs, full by about the third checkpoint. The run must
  exit 1 with one `error:` line within 10 s of the reference's end, and leave no temporary file
  of the atomic writer (`*.tmp<pid>*`, `.staging-*`); once the tmpfs is made large, the same
  command must resume and end bitwise.
- `checkpoints_is_file` (F6): a finished run whose `checkpoints` directory was replaced by a
  file. The same command must exit 1 with one `error:` line within 30 s, and leave the run's
  config, summary and event files as they were.

Mounting needs root (CAP_SYS_ADMIN): where a test mount is refused, the two mounting trials are
reported as skipped, with mount's reason, not as passed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from typing import Any

from tools.reliability.harness import (
  TrialResult,
  copy_cache,
  kill_all,
  readable,
  steps_on_disk,
  wait_until,
)
from tools.reliability.trials import Context, Scenario, finish

EXIT_SECONDS = 10.0  # the contract: one line within this
HANG_SECONDS = 15.0  # no exit this long after the failure: judged a stall and killed
REFUSE_SECONDS = 30.0  # a refusal at start, startup included
TMPFS_SIZE = "600k"  # the MLP's workdir passes this at about step 300 of 2000
TEMPORARY = re.compile(r"\.tmp\d|^\.staging-")  # research/outputs.py and the event writer


def mount_problem(scratch: str) -> str:
  """Why this process may not mount (mount's own words), or "" when a test mount works."""
  if shutil.which("mount") is None or shutil.which("umount") is None:
    return "no mount/umount command on this machine"
  target = tempfile.mkdtemp(prefix="mount_probe_", dir=scratch)
  try:
    _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", target)
  except RuntimeError as e:
    return f"mounting needs root: {str(e).replace(target, 'DIR')}"
  else:
    _umount(target)
    return ""
  finally:
    with contextlib.suppress(OSError):
      os.rmdir(target)


def _mount(*args: str) -> None:
  done = subprocess.run(["mount", *args], capture_output=True, text=True)
  if done.returncode != 0:
    said = done.stderr.strip().splitlines()
    raise RuntimeError((said[0] if said else f"mount exited {done.returncode}")[:200])


def _umount(target: str) -> None:
  """Unmounts `target`; lazily when still busy (a process that was killed holds it a moment)."""
  for _ in range(20):
    if subprocess.run(["umount", target], capture_output=True).returncode == 0:
      return
    time.sleep(0.1)
  subprocess.run(["umount", "-l", target], capture_output=True)


def _skipped(index: int, name: str, problem: str) -> TrialResult:
  return TrialResult("storage", index, False, 0.0, [], {"name": name}, skipped=problem)


def _judge_failure(
  launch, since: float, limit: float, what: str, details: dict[str, Any]
) -> list[str]:
  """The run must exit 1 with one readable `error:` line within `limit` seconds of `since`."""
  rc = launch.wait(max(0.0, since + max(limit, HANG_SECONDS) - time.monotonic()))
  seconds = time.monotonic() - since
  if rc is None:
    launch.kill()
    details["hang"] = True
    return [f"no exit {seconds:.0f} s after {what} (limit {limit:.0f} s); killed with -9"]
  lines = launch.stderr_lines()
  details.update(hang=False, exit_code=rc, exit_seconds=round(seconds, 2), stderr=lines[-3:])
  why = []
  if rc != 1:
    why.append(f"exit status {rc} after {what}, expected 1")
  if seconds > limit:
    why.append(f"exit {seconds:.1f} s after {what} (limit {limit:.0f} s)")
  if len(lines) != 1 or not lines[0].startswith("error: "):
    last = lines[-1][:160] if lines else "nothing"
    why.append(f"{len(lines)} stderr line(s) after {what}, not one `error:` line (last: {last})")
  return why + readable(lines)


def readonly_checkpoints_trial(ctx: Context, index: int) -> TrialResult:
  problem = mount_problem(ctx.directory)
  if problem:
    return _skipped(index, "readonly_checkpoints", problem)
  t0 = time.monotonic()
  details: dict[str, Any] = {"name": "readonly_checkpoints"}
  cache = copy_cache(ctx.setup, ctx.directory)
  launch = ctx.launch("readonly", cache)
  checkpoints = os.path.join(ctx.workdir, "checkpoints")
  why: list[str] = []
  mounted = False
  try:
    if not wait_until(launch, lambda: bool(steps_on_disk(ctx.workdir)), 120):
      why.append(f"the run exited {launch.poll()} before its first checkpoint")
      return TrialResult("storage", index, False, time.monotonic() - t0, why, details)
    _mount("--bind", checkpoints, checkpoints)
    mounted = True
    _mount("-o", "remount,bind,ro", checkpoints)
    since = time.monotonic()
    details["read_only_from"] = steps_on_disk(ctx.workdir)[-1:]
    why += _judge_failure(launch, since, EXIT_SECONDS, "checkpoints/ turned read-only", details)
  finally:
    launch.kill()
    if mounted:
      _umount(checkpoints)
  final, lines, seconds = finish(ctx, cache)
  why += [f"after the mount was lifted: {w}" for w in final]
  details.update(resume_stderr=lines[-3:], resume_seconds=round(seconds, 2))
  return TrialResult("storage", index, not why, time.monotonic() - t0, why, details)


def disk_full_trial(ctx: Context, index: int) -> TrialResult:
  problem = mount_problem(ctx.directory)
  if problem:
    return _skipped(index, "disk_full", problem)
  t0 = time.monotonic()
  details: dict[str, Any] = {"name": "disk_full", "tmpfs": TMPFS_SIZE}
  cache = copy_cache(ctx.setup, ctx.directory)
  os.makedirs(ctx.workdir)
  _mount("-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", ctx.workdir)
  why: list[str] = []
  try:
    launch = ctx.launch("full", cache)
    limit = ctx.timeline.end + EXIT_SECONDS  # the disk fills before the run's end
    why += _judge_failure(launch, launch.started, limit, "its start on a small disk", details)
    left = [
      os.path.relpath(os.path.join(d, n), ctx.workdir)
      for d, dirs, files in os.walk(ctx.workdir)
      for n in dirs + files
      if TEMPORARY.search(n)
    ]
    if left:
      why.append(f"temporary files left behind: {', '.join(sorted(left)[:3])}")
    _mount("-o", "remount,size=64m", ctx.workdir)  # space freed
    final, lines, seconds = finish(ctx, cache)
    why += [f"after space was freed: {w}" for w in final]
    details.update(resume_stderr=lines[-3:], resume_seconds=round(seconds, 2))
  finally:
    kill_all(ctx.directory + os.sep)
    _umount(ctx.workdir)
  return TrialResult("storage", index, not why, time.monotonic() - t0, why, details)


def checkpoints_is_file_trial(ctx: Context, index: int) -> TrialResult:
  t0 = time.monotonic()
  details: dict[str, Any] = {"name": "checkpoints_is_file"}
  shutil.copytree(ctx.reference_dir, ctx.workdir, symlinks=True)
  checkpoints = os.path.join(ctx.workdir, "checkpoints")
  shutil.rmtree(checkpoints)
  with open(checkpoints, "w") as f:
    f.write("not a directory\n")
  before = _run_files(ctx.workdir)
  launch = ctx.launch("refused", copy_cache(ctx.setup, ctx.directory))
  why = _judge_failure(launch, launch.started, REFUSE_SECONDS, "its start", details)
  after = _run_files(ctx.workdir)
  changed = sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))
  if changed:
    why.append(f"the finished run's files changed: {', '.join(changed[:3])}")
  return TrialResult("storage", index, not why, time.monotonic() - t0, why, details)


def _run_files(workdir: str) -> dict[str, bytes]:
  """config.json, summary.json, `checkpoints` and every event file, by path: their bytes."""
  out = {}
  for d, _, files in os.walk(workdir):
    for n in files:
      rel = os.path.relpath(os.path.join(d, n), workdir)
      if n in ("config.json", "summary.json", "checkpoints") or n.startswith("events.out"):
        with open(os.path.join(d, n), "rb") as f:
          out[rel] = f.read()
  return out


TRIALS = (
  Scenario("readonly_checkpoints", readonly_checkpoints_trial),
  Scenario("disk_full", disk_full_trial),
  Scenario("checkpoints_is_file", checkpoints_is_file_trial),
)
QUICK = ("readonly_checkpoints", "checkpoints_is_file")
