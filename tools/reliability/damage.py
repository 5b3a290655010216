"""Damaged checkpoints: each kind of damage a crash or a bad disk leaves, then inference and a
resume judged against the contract.

A trial trains the campaign's command until at least three checkpoints are on disk, kills it
(-9, so nothing is tidied), damages one or two steps, and then checks:
- `scripts/infer.py` on the damaged latest step exits 1 with one `error:` line naming the
  damaged step and a restorable one, `--checkpoint <that step>` then predicts, and inference
  leaves the checkpoints as they were;
- the same training command exits 0 with one `warning:` line naming the damaged steps, where
  they went (`checkpoints_damaged`) and the step it resumed from (the newest intact one);
- every damaged step is under `<workdir>/checkpoints_damaged/` byte for byte (nothing deleted);
- the run ends bitwise where the uninterrupted reference ends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import sys
import time
from typing import Callable

import numpy as np

from tools.reliability.harness import (
  REPO,
  TrialResult,
  copy_cache,
  readable,
  run_to_end,
  saving,
  steps_on_disk,
  wait_until,
)
from tools.reliability.trials import Context, finish

DAMAGED_DIR = "checkpoints_damaged"
GARBAGE = b"\x00\xff{not json, not a checkpoint"


@dataclasses.dataclass(frozen=True)
class Damage:
  """One kind of damage: which steps it hits and what it does to each step directory."""

  name: str
  targets: Callable[[list[int]], list[int]]  # the steps on disk (sorted) -> the steps to damage
  apply: Callable[[str, np.random.Generator], None]
  params_intact: bool = False  # inference may still predict from the damaged newest step


def _newest(steps: list[int]) -> list[int]:
  return steps[-1:]


def _files(directory: str) -> list[str]:
  return sorted(os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs)


def _truncate_params(step_dir: str, rng: np.random.Generator) -> None:
  """The largest file of the params item (array data) cut to half: a write the disk lost."""
  data = max(_files(os.path.join(step_dir, "params")), key=os.path.getsize)
  with open(data, "r+b") as f:
    f.truncate(os.path.getsize(data) // 2)


def _remove(item: str) -> Callable[[str, np.random.Generator], None]:
  return lambda step_dir, rng: shutil.rmtree(os.path.join(step_dir, item))


def _garble(*names: str) -> Callable[[str, np.random.Generator], None]:
  def apply(step_dir: str, rng: np.random.Generator) -> None:
    for name in names:
      with open(os.path.join(step_dir, name), "wb") as f:
        f.write(GARBAGE)

  return apply


def _empty(step_dir: str, rng: np.random.Generator) -> None:
  shutil.rmtree(step_dir)
  os.mkdir(step_dir)


def _half_delete(step_dir: str, rng: np.random.Generator) -> None:
  """About half the files gone, directories left: a kill during the deletion of an old step."""
  files = _files(step_dir)
  for f in rng.choice(files, max(1, len(files) // 2), replace=False):
    os.remove(f)


DAMAGES = (
  Damage("truncated_params", _newest, _truncate_params),
  Damage("params_deleted", _newest, _remove("params")),
  Damage("opt_state_deleted", _newest, _remove("opt_state"), params_intact=True),
  Damage(
    "checkpoint_metadata_garbage", _newest, _garble("_CHECKPOINT_METADATA"), params_intact=True
  ),
  Damage(
    "item_metadata_garbage",
    _newest,
    _garble("params/_METADATA", "opt_state/_METADATA", "meta/metadata"),
  ),
  Damage("empty_step", _newest, _empty),
  Damage("half_deleted_older", lambda steps: steps[:1], _half_delete, params_intact=True),
  Damage("two_newest_damaged", lambda steps: steps[-2:], _truncate_params),
)
QUICK = ("truncated_params", "half_deleted_older")


def tree_hash(directory: str) -> dict[str, str]:
  """Relative path -> sha256 of every file (and 'dir' for every directory, empty ones too)."""
  out = {}
  for d, dirs, files in os.walk(directory):
    for name in dirs:
      out[os.path.relpath(os.path.join(d, name), directory)] = "dir"
    for name in files:
      with open(os.path.join(d, name), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
      out[os.path.relpath(os.path.join(d, name), directory)] = digest
  return out


def names(text: str, step: int) -> bool:
  """Whether `text` names step `step` as a number of its own (300 is not in 1300)."""
  return re.search(rf"(?<!\d){step}(?!\d)", text) is not None


def damage_trial(ctx: Context, index: int, damage: Damage) -> TrialResult:
  t0 = time.monotonic()
  details: dict = {"damage": damage.name}
  cache = copy_cache(ctx.setup, ctx.directory)
  why = _train_partway(ctx, cache, details)
  if why:
    return TrialResult("damaged", index, False, time.monotonic() - t0, why, details)
  steps = steps_on_disk(ctx.workdir)
  hit = damage.targets(steps)
  good = max(s for s in steps if s not in hit)
  details.update({"steps": steps, "damaged_steps": hit, "expected_resume": good})
  ckpts = os.path.join(ctx.workdir, "checkpoints")
  for step in hit:
    damage.apply(os.path.join(ckpts, str(step)), ctx.rng)
  damaged = {step: tree_hash(os.path.join(ckpts, str(step))) for step in hit}
  before = tree_hash(ckpts)
  why += _judge_inference(ctx, cache, damage, hit, good, details)
  if tree_hash(ckpts) != before:
    why.append("scripts/infer.py changed the checkpoints directory")
  final, lines, seconds = finish(ctx, cache)
  details["resume_stderr"] = lines[-4:]
  details["resume_seconds"] = round(seconds, 2)
  warnings = [line for line in lines if line.startswith("warning:")]
  if len(lines) != 1 or len(warnings) != 1:
    why.append(f"resume printed {len(lines)} stderr lines, expected one 'warning:' line")
  elif not (
    all(names(warnings[0], s) for s in hit)
    and names(warnings[0], good)
    and DAMAGED_DIR in warnings[0]
  ):
    why.append(f"the warning does not name steps {hit}, {DAMAGED_DIR} and step {good}")
  why += _moved_intact(ctx.workdir, damaged)
  why += final
  return TrialResult("damaged", index, not why, time.monotonic() - t0, why, details)


def _train_partway(ctx: Context, cache: str, details: dict) -> list[str]:
  """Trains until at least three checkpoints are on disk and the newest reaches a drawn step,
  then kills the run (-9) between saves."""
  every = ctx.setup.checkpoint_every
  target = every * int(ctx.rng.integers(3, max(4, int(0.6 * ctx.setup.num_steps / every) + 1)))
  details["kill_after_step"] = target
  launch = ctx.launch("partway", cache)

  def ready() -> bool:
    steps = steps_on_disk(ctx.workdir)
    return len(steps) >= 3 and steps[-1] >= target and not saving(ctx.workdir)

  reached = wait_until(launch, ready, 120)
  launch.kill()
  if not reached or len(steps_on_disk(ctx.workdir)) < 3:
    return [f"setup: the run did not reach 3 checkpoints and step {target} before it ended"]
  # A save that began between the last look and the kill is the kill -9 trials' case, not this
  # one's: its leftover would add Orbax's own warning to the resume's stderr.
  for name in saving(ctx.workdir):
    shutil.rmtree(os.path.join(ctx.workdir, "checkpoints", name))
    details["removed_unfinished_save"] = name
  return []


def _judge_inference(
  ctx: Context, cache: str, damage: Damage, hit: list[int], good: int, details: dict
) -> list[str]:
  """infer.py on the damaged workdir: an `error:` line naming the damaged newest step and a
  restorable one, then `--checkpoint <good>` predicts."""
  newest = max(steps_on_disk(ctx.workdir))
  command = [
    sys.executable,
    os.path.join(REPO, "scripts", "infer.py"),
    "--workdir",
    ctx.workdir,
    "--input",
    ctx.setup.infer_input,
    "--output",
    os.path.join(ctx.directory, "predictions.npy"),
  ]
  env, log = ctx.setup.env(cache), os.path.join(ctx.directory, "infer")
  rc, lines, _ = run_to_end(command, env, log, ctx.core)
  details["infer_latest"] = {"exit_code": rc, "stderr": lines[-3:]}
  if newest not in hit:  # the newest step is intact: inference must simply work
    return [] if rc == 0 else [f"infer.py on the intact newest step {newest} exited {rc}"]
  if rc == 0 and damage.params_intact:
    return []  # its params are whole: predicting from them is right too
  why = []
  if rc != 1 or len(lines) != 1 or not lines[0].startswith("error:"):
    why.append(f"infer.py on damaged step {newest} exited {rc} with {len(lines)} stderr lines")
  elif not (names(lines[0], newest) and names(lines[0], good)):
    why.append(f"infer.py's error does not name damaged step {newest} and restorable {good}")
  why += readable(lines)
  rc, lines, _ = run_to_end([*command, "--checkpoint", str(good)], env, log + "_good", ctx.core)
  details["infer_good"] = {"exit_code": rc, "stderr": lines[-3:]}
  if rc != 0:
    why.append(f"infer.py --checkpoint {good} exited {rc}")
  return why


def _moved_intact(workdir: str, damaged: dict[int, dict[str, str]]) -> list[str]:
  """Each damaged step under checkpoints_damaged/<step>[suffix], every byte as it was left."""
  root = os.path.join(workdir, DAMAGED_DIR)
  try:
    entries = os.listdir(root)
  except OSError:
    entries = []
  why = []
  for step, hashes in damaged.items():
    candidates = [e for e in entries if re.fullmatch(rf"{step}(\D.*)?", e)]
    if not any(tree_hash(os.path.join(root, e)) == hashes for e in candidates):
      found = "not there" if not candidates else f"changed ({', '.join(candidates)})"
      why.append(f"damaged step {step} under {DAMAGED_DIR}/: {found}")
  return why
