"""The one place that talks to Orbax.

A checkpoint holds three items: `params`, `opt_state` and `meta` (JSON: step, data position, RNG,
timings). Keeping params apart lets inference restore them without reading the optimizer state.
The latest N checkpoints are kept plus the best: the training loop saves a checkpoint at every
new best validation score and passes that score (only then), so the kept best is the step
`summary.json` names. Saves are asynchronous and
atomic (Orbax writes to a temporary directory and renames), so a killed run never leaves a
half-written checkpoint that a restore would pick up.

Damage is expected too: a disk fills, a copy is cut short, a kill lands while an old step is
removed. Orbax removes an old step by renaming it into `<checkpoints>/.deleting/` (atomic) and this
module empties that folder, so a kill mid-deletion never leaves a half-deleted step listed. A step
that lacks one of the files every save writes, or that does not restore, is damaged: a writable
`Checkpointer` moves it to `<checkpoints>_damaged/<step>` (never deletes it) and `restore_latest`
falls back to the newest step that restores; a read-only one (inference) names it and the steps
that do restore.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from research import storage
from research.errors import UserError
from research.outputs import rename

BEST_METRIC = "score"  # higher is better: validation accuracy, or minus a validation loss
_TRASH = ".deleting"  # Orbax renames a step here to delete it; emptied by this module
# Files every save writes; a step without one of them was cut short or half-deleted.
_REQUIRED_FILES = (
  "_CHECKPOINT_METADATA",
  "params/_METADATA",
  "opt_state/_METADATA",
  "meta/metadata",
)


# Orbax's log lines about a damaged step (named once, by this module's error or warning) and
# about cleaning up a save cut short by a kill (expected; the resume carries on).
_DAMAGE_LOGGED = (
  "Failed to json parse Metadata",
  "Failed to read Metadata file",
  "Metadata file does not exist",
)
_KILL_LEFTOVER_LOGGED = "not finalized"


class _QuietReadOnly(logging.Filter):
  """Orbax warns on every read-only open, which is how inference opens a run on purpose, and on
  every save without metrics, which is how every step but a new best is saved on purpose."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(
      quiet in message for quiet in ("is read only", "read_only=True", "did not provide metrics")
    ) and not (message.startswith(_DAMAGE_LOGGED) or _KILL_LEFTOVER_LOGGED in message)


logging.getLogger("absl").addFilter(_QuietReadOnly())


class _QuietStorageFailure(logging.Filter):
  """A full or read-only disk fails every thread of an asynchronous save, and Orbax logs each
  with its traceback (450 lines); the save's error says it in one line (research/storage.py)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.exc_info and record.exc_info[1] is not None:
      if storage.failure(record.exc_info[1]) is not None:
        return False
    return storage.failure(Exception(record.getMessage())) is None


logging.getLogger("absl").addFilter(_QuietStorageFailure())


class _QuietAsyncioShutdown(logging.Filter):
  """A restore that fails on damaged data leaves TensorStore reads pending; asyncio then logs
  each at shutdown (600-1600 lines before the one-line error). The error says it once."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "during asyncio.run() shutdown" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_QuietAsyncioShutdown())


class CheckpointError(UserError, RuntimeError):
  """No usable checkpoint where one was expected; the message says where and what to do.

  `reason` is the short what-is-wrong of a damaged step."""

  def __init__(self, message: str, reason: str = ""):
    super().__init__(message)
    self.reason = reason or message


def abstract_like(tree: Any) -> Any:
  """Shape, dtype and sharding of every leaf: the target Orbax restores against.

  Without a target, optax states come back as plain dicts and lists.
  """
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
  )


def damaged_dir(directory: str) -> str:
  """Where damaged steps of `directory` are moved: `<directory>_damaged/`."""
  return os.path.abspath(directory).rstrip(os.sep) + "_damaged"


def find_damaged(directory: str, params_only: bool = False) -> dict[int, str]:
  """Step -> what is wrong, for every step directory missing a file every save writes (but the
  optimizer state's, when `params_only`: inference never reads it)."""
  required = [f for f in _REQUIRED_FILES if not (params_only and f.startswith("opt_state/"))]
  try:
    names = os.listdir(directory)
  except OSError:
    return {}
  damaged = {}
  for name in names:
    step_dir = os.path.join(directory, name)
    if not name.isdigit() or not os.path.isdir(step_dir):
      continue
    missing = [f for f in required if not os.path.isfile(os.path.join(step_dir, f))]
    if missing:
      damaged[int(name)] = f"{missing[0]} is missing"
      continue
    try:
      with open(os.path.join(step_dir, _REQUIRED_FILES[0])) as f:
        json.load(f)
    except (OSError, ValueError):
      damaged[int(name)] = f"{_REQUIRED_FILES[0]} is not valid JSON"
  return damaged


class Checkpointer:
  """Saves and restores train state under `<workdir>/checkpoints`.

  A writable one first sets damaged steps aside (`set_aside` lists them); a read-only one
  (inference: params alone) leaves them in place and never lists them (`damaged` names them).
  """

  def __init__(self, directory: str | os.PathLike, keep_latest: int = 2, read_only: bool = False):
    self.directory = os.path.abspath(os.fspath(directory))
    self.read_only = read_only
    self.damaged: dict[int, str] = find_damaged(self.directory, params_only=read_only)
    self.set_aside: list[tuple[int, str, str]] = []  # (step, what is wrong, where it went)
    if not read_only:
      self._empty_trash()
      for step, why in sorted(self.damaged.items()):
        self._set_aside(step, why)
    options = ocp.CheckpointManagerOptions(
      preservation_policy=policies.AnyPreservationPolicy(
        [
          policies.LatestN(keep_latest),
          # Only new bests carry a score; every other step is the latest N's to keep or drop.
          policies.BestN(
            get_metric_fn=lambda m: m[BEST_METRIC], n=1, keep_checkpoints_without_metrics=False
          ),
        ]
      ),
      # best_fn only makes Orbax write each step's metrics to disk, so the best checkpoint is
      # still known after a restart; deletion follows preservation_policy alone (best_fn with
      # max_to_keep would delete the newest step).
      best_fn=lambda m: m[BEST_METRIC],
      best_mode="max",
      create=not read_only,
      read_only=read_only,
      enable_async_checkpointing=not read_only,
      todelete_subdir=None if read_only else _TRASH,  # a rename: atomic, unlike a delete
      # Step directories made in `save`, in this thread: made in Orbax's background thread, a
      # read-only or missing directory had stalled the run 300 s (a wait for a signal that the
      # failed thread never sent) before 394 lines of tracebacks.
      async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
    )
    self._manager = ocp.CheckpointManager(
      self.directory, item_names=("params", "opt_state", "meta"), options=options
    )

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return max(steps) if steps else None

  def all_steps(self) -> list[int]:
    """Steps on disk, damaged ones excluded."""
    return sorted(s for s in self._manager.all_steps() if s not in self.damaged)

  def restore_latest(self, params_like: Any, opt_state_like: Any) -> tuple[int, Any, Any, dict]:
    """The newest step that restores: (step, params, opt_state, meta), or (None, ...) if none.

    Each newer step that fails to restore is set aside (`set_aside` says which and where).
    """
    for step in reversed(self.all_steps()):
      try:
        return (step, *self.restore(step, params_like, opt_state_like))
      except CheckpointError as e:
        self.damaged[step] = e.reason
        self._set_aside(step, e.reason)
        self._manager.reload()
    return None, None, None, {}

  def restorable_steps(self, params_like: Any, skip: int | None = None) -> list[int]:
    """Steps whose params restore, newest first: what to offer when the asked step is damaged."""
    good = []
    for step in reversed(self.all_steps()):
      if step == skip:
        continue
      try:
        self.restore_params(step, params_like)
      except CheckpointError:
        continue
      good.append(step)
    return good

  def _set_aside(self, step: int, why: str) -> None:
    """Moves a damaged step to `damaged_dir` (a numbered suffix when that name is taken)."""
    self.damaged[step] = why
    source = os.path.join(self.directory, str(step))
    if self.read_only or not os.path.isdir(source) or not _is_primary():
      return
    target_dir = damaged_dir(self.directory)
    os.makedirs(target_dir, exist_ok=True)
    target, n = os.path.join(target_dir, str(step)), 1
    while os.path.exists(target):
      target, n = os.path.join(target_dir, f"{step}.{n}"), n + 1
    rename(source, target)
    self.set_aside.append((step, why, target))

  def _empty_trash(self) -> None:
    """Removes what Orbax renamed for deletion; a kill mid-way leaves only more trash."""
    trash = os.path.join(self.directory, _TRASH)
    if os.path.isdir(trash) and _is_primary():
      shutil.rmtree(trash, ignore_errors=True)

  def best_step(self) -> int | None:
    """Step of the highest validation score among the kept checkpoints (None: no validation)."""
    best = None
    for step in self.all_steps():
      metrics = self._manager.metrics(step) or {}
      if BEST_METRIC in metrics and (best is None or metrics[BEST_METRIC] > best[1]):
        best = (step, metrics[BEST_METRIC])
    return None if best is None else best[0]

  def save(self, step: int, params: Any, opt_state: Any, meta: dict, score: float | None) -> None:
    """Starts an asynchronous save; errors surface at the next save or at `wait`.

    `score` is given for a new best only (higher is better); it ranks the kept best.
    """
    with storage.reported("a checkpoint could not be saved", self.directory):
      self._manager.check_for_errors()
    metrics = None if score is None else {BEST_METRIC: float(score)}
    with storage.reported(f"checkpoint step {step} not saved", self.directory):
      self._manager.save(
        step,
        args=ocp.args.Composite(
          params=ocp.args.StandardSave(params),
          opt_state=ocp.args.StandardSave(opt_state),
          meta=ocp.args.JsonSave(meta),
        ),
        metrics=metrics,
      )

  def restore(self, step: int, params_like: Any, opt_state_like: Any) -> tuple[Any, Any, dict]:
    """Params, optimizer state and meta of `step`, placed like the given (abstract) trees."""
    try:
      restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract_like(params_like)),
          opt_state=ocp.args.StandardRestore(abstract_like(opt_state_like)),
          meta=ocp.args.JsonRestore(),
        ),
      )
    except Exception as e:  # Orbax raises many types for a damaged directory
      raise CheckpointError(
        f"checkpoint step {step} in {self.directory} is damaged ({describe_damage(e)})",
        reason=describe_damage(e),
      ) from None
    return restored.params, restored.opt_state, dict(restored.meta)

  def restore_params(self, step: int, params_like: Any) -> Any:
    """Params alone: the optimizer state is never read."""
    try:
      restored = self._manager.restore(
        step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_like(params_like)))
      )
    except Exception as e:
      raise CheckpointError(
        f"params of checkpoint step {step} in {self.directory} are damaged ({describe_damage(e)})",
        reason=describe_damage(e),
      ) from None
    return restored.params

  def restore_meta(self, step: int) -> dict:
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception as e:
      reason = describe_damage(e)
      raise CheckpointError(
        f"meta of checkpoint step {step} in {self.directory} is damaged ({reason})", reason
      ) from None
    return dict(restored.meta)

  def wait(self) -> None:
    """Blocks until pending saves are on disk, and raises if any failed."""
    with storage.reported("a checkpoint could not be saved", self.directory):
      self._manager.wait_until_finished()
      self._manager.check_for_errors()
    if not self.read_only:
      self._empty_trash()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    try:
      self.wait()
    finally:
      self.close()


def resolve_step(checkpointer: Checkpointer, which: str | int) -> int:
  """'latest', 'best' or a step number, checked against what is on disk.

  A damaged step is returned like any other: restoring it names what is wrong and what restores.
  """
  steps = sorted(set(checkpointer.all_steps()) | set(checkpointer.damaged))
  if not steps:
    raise CheckpointError(
      f"no checkpoint in {checkpointer.directory}; train first "
      f"(python scripts/train.py --workdir ...)"
    )
  if which == "latest":
    return max(steps)
  if which == "best":
    best = checkpointer.best_step()
    if best is None:
      raise CheckpointError(
        f"no best checkpoint in {checkpointer.directory}: the best is chosen on a validation "
        f"split and this run had none; use --checkpoint latest or a step "
        f"({', '.join(map(str, steps))}), or train with --config.data.validation_size=N"
      )
    return best
  try:
    step = int(which)
  except ValueError:
    raise CheckpointError(
      f"--checkpoint {which!r} is not a checkpoint; use latest, best or a step "
      f"({', '.join(map(str, steps))})"
    ) from None
  if step not in steps:
    raise CheckpointError(
      f"no checkpoint at step {step} in {checkpointer.directory}; "
      f"available: {', '.join(map(str, steps))}"
    )
  return step


def describe_damage(e: BaseException) -> str:
  """What is wrong with a step, in a few words, from whatever Orbax or TensorStore raised.

  TensorStore's own text ends in a garbled `<bound method pybind11_...>`; it is never shown.
  """
  text = " ".join(str(e).split())
  if isinstance(e, KeyError) and "was not found" in text:
    return f"item {text.split(chr(34))[1]!r} is missing" if text.count(chr(34)) >= 2 else text
  if isinstance(e, ValueError) and "Expecting" in text and type(e).__name__ == "JSONDecodeError":
    return "a metadata file is not valid JSON"
  if "TensorStore" in text or "DATA_LOSS" in text or "OCDBT" in text or "reading array" in text:
    return "array data unreadable: a file is truncated or corrupt"
  if isinstance(e, FileNotFoundError):
    return f"{os.path.basename(e.filename or '') or 'a file'} is missing"
  text = text.split(" See full TensorStore")[0].split("<bound method")[0].strip()
  return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


def _is_primary() -> bool:
  """Only the first process moves or removes steps in a shared directory."""
  return jax.process_index() == 0
