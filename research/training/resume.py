"""What a checkpoint holds besides the train state, and how a run picks up from one.

`meta` carries the timings so far, the last and best evaluation, and the data position (the next
step, epoch and batch): with the step-seeded batch schedule that is all a resume needs to end
bitwise where an uninterrupted run ends.
"""

from __future__ import annotations

import os
import sys

import jax.numpy as jnp

from research.checkpoint import Checkpointer
from research.data import BatchSchedule
from research.training.step import TrainState


def restore_or_start(ckpt: Checkpointer, state: TrainState) -> tuple[TrainState, dict]:
  """The newest checkpoint that restores, or the fresh state; damaged steps are set aside and
  named in one line."""
  seconds = ("train_seconds", "compile_seconds", "eval_seconds", "checkpoint_seconds")
  meta = {**dict.fromkeys(seconds, 0.0), "last_eval": {}, "best_eval": {}}
  step, params, opt_state, saved = ckpt.restore_latest(state.params, state.opt_state)
  if ckpt.set_aside:
    moved = "; ".join(f"step {s} ({why})" for s, why, _ in ckpt.set_aside)
    where = os.path.dirname(ckpt.set_aside[0][2])
    then = f"resuming from step {step}" if step is not None else "no good step left: from step 0"
    print(f"warning: damaged checkpoint {moved} moved to {where}; {then}", file=sys.stderr)
  if step is None:
    return state, meta
  meta.update({k: saved[k] for k in meta if k in saved})
  return TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=opt_state), meta


def save(
  ckpt: Checkpointer,
  state: TrainState,
  meta: dict,
  step: int,
  schedule: BatchSchedule,
  score: float | None,
) -> None:
  epoch, batch_in_epoch = divmod(step, schedule.steps_per_epoch)
  saved = {
    **meta,
    "step": step,
    "data_position": {
      "next_step": step,
      "epoch": epoch,
      "batch_in_epoch": batch_in_epoch,
      "shuffle": schedule.shuffle,
      "shuffle_seed": schedule.seed,
    },
    "rng": {"init_seed": schedule.seed, "note": "no stochastic layers; init key = seed"},
  }
  ckpt.save(step, state.params, state.opt_state, saved, score)
