"""The run-directory contract: what a workdir holds, under which names, and how to read it back.

Every module that writes into or reads from a run directory goes through these names, so the
layout is defined once:

    <workdir>/
      config.json              the resolved config (a resume must match it)
      numerics.json            what changes numbers without being config: JAX x64 mode, XLA:CPU
                               threads, backend (a resume must match the first two)
      checkpoints/<step>/      Orbax: params | opt_state | meta   (research/checkpoint.py)
      events.out.tfevents.*    TensorBoard                        (research/tensorboard_writer.py)
      summary/                 TensorBoard: trial, config, reports (research/dashboard.py)
      summary.json             what training ended with           (research/training/loop.py)
      report.{json,md,png}     the cost report                    (research/studies/)
      bench/                   the inference benchmark            (research/bench/inference.py)
      .lock                    while a command writes the run: its PID and command line
                               (research/workdir_lock.py)

One writer at a time: every command that writes a run holds `.lock` (an exclusive `flock`, which
dies with its process) and a second one is refused with the holder's PID. A start that fails
before its first checkpoint takes back what it made (`Start.undo`), and only that. Names of
this layout taken by something of the wrong kind (a file where `checkpoints/` goes) are refused
before anything is written (`check_layout`).

Nothing here imports JAX.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
from typing import Any

import ml_collections

from research import config as config_lib
from research.errors import UserError
from research.outputs import writable, write_bytes, write_json

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
SUMMARY = "summary.json"
REPORT = "report.json"
REPORT_MARKDOWN = "report.md"
REPORT_FIGURE = "report.png"
BENCH = "bench"
NUMERICS = "numerics.json"
TENSORBOARD_SUMMARY = "summary"  # research/dashboard.py's SUMMARY_RUN
PROFILE = "plugins"  # jax.profiler traces
LOCK = ".lock"

# What a start may create in its workdir before its first checkpoint, and so take back.
_RUN_ENTRIES = (CONFIG, NUMERICS, CHECKPOINTS, TENSORBOARD_SUMMARY, PROFILE)
# Names of the layout a training writes, and whether each is a directory: anything else there
# (a file where checkpoints/ goes) would fail only after training, so it is refused first.
_LAYOUT = {
  CONFIG: False,
  NUMERICS: False,
  SUMMARY: False,
  CHECKPOINTS: True,
  CHECKPOINTS + "_damaged": True,
  TENSORBOARD_SUMMARY: True,
}

# Config fields a run may change on resume: a longer run, another device count (checkpoints
# restore onto the current mesh), another profiled window or peer timeout. Anything else makes
# another run.
RESUMABLE_CHANGES = ("num_steps", "num_devices", "profile_steps", "peer_timeout_seconds")


class WorkdirError(UserError, RuntimeError):
  """A run directory that cannot be used as asked; the message says which and what to do."""


def path(workdir: str, name: str) -> str:
  """`<workdir>/<name>` for one of this module's names."""
  return os.path.join(workdir, name)


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, CHECKPOINTS)


@dataclasses.dataclass(frozen=True)
class Start:
  """What a workdir held before a run started in it, so a start that fails before its first
  checkpoint can be taken back (`undo`) and the corrected command is not refused."""

  workdir: str
  existed: bool
  entries: frozenset[str]
  old_files: dict[str, bytes | None] = dataclasses.field(default_factory=dict)  # rewritten

  def undo(self) -> None:
    """Takes back what this start made, unless a checkpoint exists: the files it rewrote get
    their old bytes back, and the entries it created (new since the start, and of this run's
    own names: its config and numerics record, checkpoints/, summary/, plugins/, event files
    named with this process's host and PID) are removed. Anything else that appeared meanwhile
    is another process's (a log, another job's directory) and stays."""
    if latest_checkpoint_step(self.workdir) is not None or not os.path.isdir(self.workdir):
      return
    for name in set(os.listdir(self.workdir)) - self.entries:
      if name in self.old_files or not _made_by_this_process(name):
        continue
      target = os.path.join(self.workdir, name)
      if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target, ignore_errors=True)
      else:
        with contextlib.suppress(FileNotFoundError):
          os.remove(target)
    for name, data in self.old_files.items():
      if data is not None:
        write_bytes(path(self.workdir, name), data)
      elif name not in self.entries:
        with contextlib.suppress(FileNotFoundError):
          os.remove(path(self.workdir, name))
    if not self.existed:
      with contextlib.suppress(OSError):
        os.rmdir(self.workdir)


def _made_by_this_process(name: str) -> bool:
  """Whether a new entry is one this run's start makes (only this process writes them: the
  workdir is locked); event files carry their writer's host and PID in their name."""
  if name in _RUN_ENTRIES:
    return True
  return (
    name.startswith("events.out.tfevents.") and f".{socket.gethostname()}.{os.getpid()}." in name
  )


def prepare(
  workdir: str,
  config: ml_collections.ConfigDict,
  write: bool = True,
  numerics: dict[str, Any] | None = None,
) -> Start:
  """Creates the workdir, checks it is writable, and pins its config (a resume must match) and
  the numeric environment `numerics` (`runtime.numeric_environment`) it trains under.

  `write=False` (every process of a multi-process run but the first) only checks the config.
  """
  before = _entries(workdir)
  if not write:
    check_config(workdir, config)
    return Start(workdir, before is not None, frozenset(before or ()))
  if before is not None and not writable(workdir):
    raise WorkdirError(f"workdir {workdir!r} is read-only; choose another --workdir")
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    if before is None:
      with contextlib.suppress(OSError):
        os.rmdir(workdir)
    raise WorkdirError(
      f"workdir {workdir!r} is not writable ({e.strerror}); choose another --workdir"
    ) from None
  names = (CONFIG, NUMERICS) if numerics is not None else (CONFIG,)
  old = {name: _read_bytes(workdir, name) for name in names}
  start = Start(workdir, before is not None, frozenset(before or ()), old)
  try:
    check_config(workdir, config)
    config_lib.save_config(config, path(workdir, CONFIG))  # atomic: see outputs.write_json
    if numerics is not None:
      write_json(path(workdir, NUMERICS), numerics)
  except BaseException:
    start.undo()
    raise
  return start


def check_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Raises WorkdirError when `workdir` holds a run whose config `config` may not resume.

  A config.json without a checkpoint is a start that never got going (a kill while JAX
  started): it binds nothing, and the new config replaces it.
  """
  check_layout(workdir)
  config_path = path(workdir, CONFIG)
  if not os.path.exists(config_path) or latest_checkpoint_step(workdir) is None:
    return
  try:
    with open(config_path) as f:
      old = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(
      f"{config_path} is unreadable ({type(e).__name__}); use a new --workdir"
    ) from None
  new = config_lib.to_dict(config)
  changed = [k for k in config_lib.config_differences(old, new) if k not in RESUMABLE_CHANGES]
  if changed:
    raise WorkdirError(
      f"workdir {workdir!r} holds a run with a different config "
      f"({', '.join(changed)}); use a new --workdir or the same settings"
    )


def check_layout(workdir: str) -> None:
  """Raises WorkdirError when a name of the run's layout holds the wrong kind of entry (a file
  where checkpoints/ goes): the run would not see its checkpoints, train from step 0, and fail
  only when it first saves, after replacing a finished run's events."""
  for name, is_dir in _LAYOUT.items():
    target = path(workdir, name)
    if not os.path.lexists(target) or os.path.isdir(target) == is_dir:
      continue
    found, wanted = ("a directory", "file") if not is_dir else ("not a directory", "directory")
    raise WorkdirError(
      f"{target} is {found}, but a run keeps its {name} {wanted} there; move it out of the "
      f"way (or restore it), or use another --workdir"
    )


def check_numerics(workdir: str, numerics: dict[str, Any]) -> None:
  """Raises WorkdirError when the run in `workdir` was trained under another numeric
  environment than `numerics` (`runtime.numeric_environment`): x64 mode or, on CPU, XLA's
  thread count. Either changes the rounding, so the resume would silently stop continuing the
  run's numbers. The backend is recorded but may change (as the device count may): a run moved
  to other hardware goes on, with that hardware's rounding. Runs without a record (made before
  it existed) and starts without a checkpoint are not checked."""
  record_path = path(workdir, NUMERICS)
  if latest_checkpoint_step(workdir) is None or not os.path.exists(record_path):
    return
  try:
    with open(record_path) as f:
      old = json.load(f)
    if not isinstance(old, dict):
      raise ValueError("not an object")
  except (OSError, ValueError) as e:
    raise WorkdirError(
      f"{record_path} is unreadable ({type(e).__name__}); remove it to resume unchecked, or "
      f"use a new --workdir"
    ) from None
  differences, fixes = [], []
  x64 = old.get("jax_enable_x64")
  if x64 is not None and x64 != numerics.get("jax_enable_x64"):
    differences.append(f"JAX x64 mode {'on' if x64 else 'off'}, now {'off' if x64 else 'on'}")
    fixes.append(f"JAX_ENABLE_X64={int(x64)}")
  threads, now = old.get("xla_cpu_threads"), numerics.get("xla_cpu_threads")
  on_cpu = old.get("backend") == numerics.get("backend") == "cpu"
  if on_cpu and threads is not None and threads != now:
    differences.append(f"XLA:CPU on {threads} thread(s), now {now}")
    fixes.append("--threads 1" if threads == 1 else f"--threads 0 on {threads} CPUs")
  if differences:
    raise WorkdirError(
      f"workdir {workdir!r} was trained under another numeric setting "
      f"({'; '.join(differences)}), so a resume would not continue its numbers; re-run with "
      f"{' and '.join(fixes)}, or use a new --workdir"
    )


def latest_checkpoint_step(workdir: str) -> int | None:
  """The newest finished checkpoint's step, read from directory names (no Orbax, no JAX)."""
  try:
    names = os.listdir(checkpoint_dir(workdir))
  except OSError:
    return None
  steps = [int(n) for n in names if n.isdigit()]
  return max(steps) if steps else None


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run was trained with."""
  config_path = path(workdir, CONFIG)
  if not os.path.isfile(config_path):
    raise WorkdirError(
      f"{workdir!r} holds no trained run (no {CONFIG}); train first: "
      f"python scripts/train.py --workdir {workdir}"
    )
  try:
    with open(config_path) as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(
      f"{config_path} is unreadable ({e}); re-run training into a new workdir"
    ) from None
  if not isinstance(data, dict):
    raise WorkdirError(f"{config_path} is not a JSON object; re-run training into a new workdir")
  return ml_collections.ConfigDict(data)


def read_summary(workdir: str) -> dict[str, Any]:
  """summary.json of a finished training run."""
  return _read_json(
    workdir,
    SUMMARY,
    f"is it a finished training run? (python scripts/train.py --workdir {workdir})",
  )


def read_report(workdir: str) -> dict[str, Any] | None:
  """report.json of the cost report, or None when `scripts/train_vs_infer.py` has not run here."""
  if not os.path.isfile(path(workdir, REPORT)):
    return None
  return _read_json(workdir, REPORT, "re-make it with scripts/train_vs_infer.py")


def _read_json(workdir: str, name: str, hint: str) -> dict[str, Any]:
  file = path(workdir, name)
  if not os.path.isfile(file):
    raise WorkdirError(f"{workdir!r} has no {name}; {hint}")
  try:
    with open(file) as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(f"{file} is unreadable ({type(e).__name__}); {hint}") from None
  if not isinstance(data, dict):
    raise WorkdirError(f"{file} is not a JSON object; {hint}")
  return data


def _entries(workdir: str) -> set[str] | None:
  """Names in `workdir`, or None where there is no readable directory (prepare then says why)."""
  try:
    return set(os.listdir(workdir))
  except OSError:
    return None


def _read_bytes(workdir: str, name: str) -> bytes | None:
  try:
    with open(path(workdir, name), "rb") as f:
      return f.read()
  except OSError:
    return None
