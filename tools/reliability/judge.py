"""The judge of a bad input: runs one `BadInput` as a user would and checks what they see.

The project's rule: bad input ends with exactly one line on stderr starting with `error: `,
exit status 1, and nothing created, changed or removed under the case's directory or the shared
trained run. The cases themselves are tools/reliability/bad_inputs.py. A case runs in a fresh
process (`run_subprocess`, what the campaign uses), or inside a test process
(tools/reliability/in_process.py), judged the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from typing import Callable, Sequence

from research.runtime import ONE_THREAD_FLAGS
from tools import REPO


@dataclasses.dataclass(frozen=True)
class BadInput:
  """One mistake: the command (paths may hold `{tmp}` and `{run}`), and the files it needs."""

  name: str  # short and unique: "<script>: <mistake>"
  argv: tuple[str, ...]  # script path relative to the repository, then its flags
  setup: Callable[[str], None] | None = None  # prepares files in the case's tmp dir
  needs_run: bool = False  # needs a small finished training run at {run}
  env: tuple[tuple[str, str], ...] = ()  # set for the script (a fresh process only)
  copy_run: str = ""  # the shared run copied to {tmp}/<copy_run> first (to resume, say)
  expect: str = ""  # the `error:` line must name this (case-insensitive): the right problem


@dataclasses.dataclass
class CaseResult:
  name: str
  ok: bool
  exit_code: int | None  # None: killed at the timeout
  stderr_lines: list[str]  # the non-empty ones
  changed: list[str]  # "created|removed|modified: path"
  seconds: float
  why: str  # empty when ok


# (exit status, or None when it timed out; its stderr): how a case's command is run. A case with
# `env` is run as runner(argv, timeout, env=...), which only `run_subprocess` takes.
Runner = Callable[[Sequence[str], float], tuple[int | None, str]]

# The shared trained run (make_trained_run): a finished classifier with a checkpoint.
RUN_CONFIG = "experiments/mnist1d_logistic.py"  # the shared run's (make_trained_run)
RUN_FLAGS = ("num_steps=200", "log_every=100", "eval_every=100", "checkpoint_every=200")


def chmod_tree(root: str, writable: bool) -> None:
  for directory, dirs, files in os.walk(root, topdown=False):
    for name in files + dirs + [""]:
      path = os.path.join(directory, name) if name else directory
      if os.path.islink(path):
        continue
      mode = os.lstat(path).st_mode
      os.chmod(path, (mode | stat.S_IWUSR) if writable else (mode & ~0o222))
  if writable:  # the walk above lists a read-only tree's entries only once it may be read
    for directory, dirs, _ in os.walk(root):
      for d in dirs:
        os.chmod(os.path.join(directory, d), os.lstat(os.path.join(directory, d)).st_mode | 0o700)


def make_trained_run(directory: str, runner: Runner | None = None) -> str:
  """Trains one tiny run (MNIST-1D logistic regression, 200 steps: seconds, mostly making the data
  and compiling) into `directory`/run, once: a finished run already there is reused. Returns its
  workdir. The cases only need a finished classifier with a checkpoint, not a good one. `runner`
  runs scripts/train.py (default `run_subprocess`)."""
  workdir = os.path.join(directory, "run")
  if os.path.isfile(os.path.join(workdir, "summary.json")):
    return workdir
  argv = ["scripts/train.py", "--config", RUN_CONFIG, "--workdir", workdir, "--no-progress"]
  code, stderr = (runner or run_subprocess)([*argv, *(f"--config.{f}" for f in RUN_FLAGS)], 600)
  if code != 0:
    raise RuntimeError(f"training the shared run failed ({code}): {stderr.strip()[-2000:]}")
  return workdir


def run_case(
  case: BadInput,
  tmp_root: str,
  run: str | None,
  timeout: float = 120,
  runner: Runner | None = None,
) -> CaseResult:
  """Runs `case` in a fresh directory under `tmp_root` and judges it: exit status 1, exactly one
  non-empty stderr line starting with `error: `, and no file under the case's directory or the
  shared run created, removed or modified. The case's directory is removed afterwards. `runner`
  runs the command (default `run_subprocess`, a fresh process)."""
  t = time.perf_counter()
  slug = re.sub(r"[^A-Za-z0-9]+", "-", case.name).strip("-")[:40]
  tmp = tempfile.mkdtemp(prefix=f"{slug}-", dir=tmp_root)
  try:
    if case.needs_run and not run:
      return CaseResult(case.name, False, None, [], [], 0.0, "needs a trained run; none given")
    if case.setup is not None:
      case.setup(tmp)
    if case.copy_run:
      shutil.copytree(run, os.path.join(tmp, case.copy_run), symlinks=True)
    argv = [a.replace("{tmp}", tmp).replace("{run}", run or "") for a in case.argv]
    roots = [tmp] + ([run] if run else [])
    before = {root: _snapshot(root) for root in roots}
    if case.env:  # only a fresh process can start under other environment variables
      code, stderr = (runner or run_subprocess)(argv, timeout, env=dict(case.env))
    else:
      code, stderr = (runner or run_subprocess)(argv, timeout)
    changed = [c for root in roots for c in _changes(before[root], _snapshot(root))]
  finally:
    chmod_tree(tmp, writable=True)
    shutil.rmtree(tmp, ignore_errors=True)
  lines = [line for line in stderr.splitlines() if line.strip()]
  why = []
  if code != 1:
    why.append("timed out" if code is None else f"exit status {code}, not 1")
  if len(lines) != 1 or not lines[0].startswith("error: "):
    last = lines[-1][:160] if lines else "nothing"
    why.append(f"{len(lines)} stderr line(s), not one `error:` line (last: {last})")
  elif case.expect and case.expect.lower() not in lines[0].lower():
    why.append(f"the `error:` line does not name {case.expect!r}: {lines[0][:160]}")
  if changed:
    why.append(f"{len(changed)} change(s) left behind: {', '.join(changed[:3])}")
  seconds = time.perf_counter() - t
  return CaseResult(case.name, not why, code, lines, changed, seconds, "; ".join(why))


def script_env(extra: dict[str, str] | None = None) -> dict[str, str]:
  """The environment a case's script runs in: this checkout importable, XLA on one thread, and
  the case's own variables (`extra`)."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + ONE_THREAD_FLAGS).strip()
  env["PYTHONDONTWRITEBYTECODE"] = "1"  # a config file imported from {tmp} leaves no __pycache__
  env.update(extra or {})
  return env


def run_subprocess(
  argv: Sequence[str], timeout: float, env: dict[str, str] | None = None
) -> tuple[int | None, str]:
  """(exit status or None at the timeout, stderr) of `python *argv` in the repository, with
  `env` added to its environment. The script runs in its own session, so a timeout ends it and
  every process it started."""
  process = subprocess.Popen(
    [sys.executable, *argv],
    cwd=REPO,
    env=script_env(env),
    stdin=subprocess.DEVNULL,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,
  )
  try:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    _, stderr = process.communicate()
    return None, stderr


def _snapshot(root: str) -> dict[str, tuple]:
  """path -> ("dir",) or ("file", size, mtime_ns, sha256) for everything under `root`."""
  found: dict[str, tuple] = {}
  for directory, dirs, files in os.walk(root):
    for name in dirs:
      found[os.path.join(directory, name)] = ("dir",)
    for name in files:
      path = os.path.join(directory, name)
      try:
        info = os.lstat(path)
        digest = hashlib.sha256()
        if stat.S_ISREG(info.st_mode):
          with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
              digest.update(block)
        found[path] = ("file", info.st_size, info.st_mtime_ns, digest.hexdigest())
      except OSError:  # unreadable or gone: record that much
        found[path] = ("file", None, None, None)
  return found


def _changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
  out = [f"created: {p}" for p in sorted(set(after) - set(before))]
  out += [f"removed: {p}" for p in sorted(set(before) - set(after))]
  out += [f"modified: {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]]
  return out
