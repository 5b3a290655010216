"""The run-directory contract: what a workdir holds, under which names, and how to read it back.

Every module that writes into or reads from a run directory goes through these names, so the
layout is defined once:

    <workdir>/
      config.json              the resolved config (a resume must match it)
      checkpoints/<step>/      Orbax: params | opt_state | meta   (research/checkpoint.py)
      events.out.tfevents.*    TensorBoard                        (research/tensorboard_writer.py)
      summary.json             what training ended with           (research/training/loop.py)
      report.{json,md,png}     the cost report                    (research/studies/)
      bench/                   the inference benchmark            (research/bench/inference.py)

Nothing here imports JAX.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from typing import Any

import ml_collections

from research import config as config_lib
from research.errors import UserError
from research.outputs import writable, write_bytes

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
SUMMARY = "summary.json"
REPORT = "report.json"
REPORT_MARKDOWN = "report.md"
REPORT_FIGURE = "report.png"
BENCH = "bench"

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
  config_bytes: bytes | None

  def undo(self) -> None:
    """Removes what this start created and restores config.json, unless a checkpoint exists."""
    if latest_checkpoint_step(self.workdir) is not None or not os.path.isdir(self.workdir):
      return
    for name in set(os.listdir(self.workdir)) - self.entries - {CHECKPOINTS + "_damaged"}:
      target = os.path.join(self.workdir, name)
      if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target, ignore_errors=True)
      else:
        with contextlib.suppress(FileNotFoundError):
          os.remove(target)
    if self.config_bytes is not None:
      write_bytes(path(self.workdir, CONFIG), self.config_bytes)
    if not self.existed:
      with contextlib.suppress(OSError):
        os.rmdir(self.workdir)


def prepare(workdir: str, config: ml_collections.ConfigDict, write: bool = True) -> Start:
  """Creates the workdir, checks it is writable, and pins its config (a resume must match).

  `write=False` (every process of a multi-process run but the first) only checks the config.
  """
  before = _entries(workdir)
  if not write:
    check_config(workdir, config)
    return Start(workdir, before is not None, frozenset(before or ()), None)
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
  start = Start(workdir, before is not None, frozenset(before or ()), _read_bytes(workdir))
  try:
    check_config(workdir, config)
    config_lib.save_config(config, path(workdir, CONFIG))  # atomic: see outputs.write_json
  except BaseException:
    start.undo()
    raise
  return start


def check_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Raises WorkdirError when `workdir` holds a run whose config `config` may not resume.

  A config.json without a checkpoint is a start that never got going (a kill while JAX
  started): it binds nothing, and the new config replaces it.
  """
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


def _read_bytes(workdir: str) -> bytes | None:
  try:
    with open(path(workdir, CONFIG), "rb") as f:
      return f.read()
  except OSError:
    return None
