"""The one place that talks to Orbax.

A checkpoint holds three items: `params`, `opt_state` and `meta` (JSON: step, data position, RNG,
timings). Keeping params apart lets inference restore them without reading the optimizer state.
The latest N checkpoints are kept plus the best: the training loop saves a checkpoint at every
new best validation score and passes that score (only then), so the kept best is the step
`summary.json` names. Saves are asynchronous and
atomic (Orbax writes to a temporary directory and renames), so a killed run never leaves a
half-written checkpoint that a restore would pick up.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

BEST_METRIC = "score"  # higher is better: validation accuracy, or minus a validation loss


class _QuietReadOnly(logging.Filter):
  """Orbax warns on every read-only open, which is how inference opens a run on purpose, and on
  every save without metrics, which is how every step but a new best is saved on purpose."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(
      quiet in message for quiet in ("is read only", "read_only=True", "did not provide metrics")
    )


logging.getLogger("absl").addFilter(_QuietReadOnly())


class CheckpointError(RuntimeError):
  """No usable checkpoint where one was expected; the message says where and what to do."""


def abstract_like(tree: Any) -> Any:
  """Shape, dtype and sharding of every leaf: the target Orbax restores against.

  Without a target, optax states come back as plain dicts and lists.
  """
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
  )


class Checkpointer:
  """Saves and restores train state under `<workdir>/checkpoints`."""

  def __init__(self, directory: str | os.PathLike, keep_latest: int = 2, read_only: bool = False):
    self.directory = os.path.abspath(os.fspath(directory))
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
    )
    self._manager = ocp.CheckpointManager(
      self.directory, item_names=("params", "opt_state", "meta"), options=options
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

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
    self._manager.check_for_errors()
    metrics = None if score is None else {BEST_METRIC: float(score)}
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
        f"checkpoint step {step} in {self.directory} cannot be restored "
        f"({type(e).__name__}: {_first_line(e)}); delete that step's "
        f"directory to fall back to an earlier one"
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
        f"params of checkpoint step {step} in {self.directory} cannot be "
        f"restored ({type(e).__name__}: {_first_line(e)})"
      ) from None
    return restored.params

  def restore_meta(self, step: int) -> dict:
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored.meta)

  def wait(self) -> None:
    """Blocks until pending saves are on disk, and raises if any failed."""
    self._manager.wait_until_finished()
    self._manager.check_for_errors()

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
  """'latest', 'best' or a step number, checked against what is on disk."""
  steps = checkpointer.all_steps()
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
        f"({', '.join(map(str, sorted(steps)))}), or train with --config.data.validation_size=N"
      )
    return best
  step = int(which)
  if step not in steps:
    raise CheckpointError(
      f"no checkpoint at step {step} in {checkpointer.directory}; "
      f"available: {', '.join(map(str, sorted(steps)))}"
    )
  return step


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0][:200] if text else ""
