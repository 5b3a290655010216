"""What a training run ends with: `summary.json`, one flat record of its figures and setup."""

from __future__ import annotations

import os
from typing import Any

import jax

from research.data import Dataset
from research.models import count_params
from research.training.evaluators import ClassificationEvaluator
from research.training.step import TrainState


def run_summary(
  config,
  model,
  state: TrainState,
  meta: dict,
  data: Dataset,
  evaluator: ClassificationEvaluator,
  members: int,
) -> dict[str, Any]:
  import importlib.metadata as md

  device = jax.devices()[0]
  steps = int(state.step)
  last, best = meta["last_eval"], meta["best_eval"]
  summary = {
    "experiment": config.experiment,
    "model": config.model.name,
    "params": count_params(state.params),
    "dataset": data.name,
    "status": "diverged" if "diverged_at_step" in meta else "finished",
    "steps": meta.get("diverged_at_step", steps),
    "batch_size": config.batch_size,
    "final_test_accuracy": last.get("test_accuracy"),
    "final_test_loss": last.get("test_loss"),
    "final_val_accuracy": last.get("val_accuracy"),
    "final_val_loss": last.get("val_loss"),
    # The best is chosen on validation; its test figures are reported, never used to choose.
    "best_selected_on": evaluator.score_name if evaluator.has_validation else None,
    "best_step": best.get("step"),
    "best_val_accuracy": best.get("val_accuracy"),
    "best_val_loss": best.get("val_loss"),
    "best_test_accuracy": best.get("test_accuracy"),
    "best_test_loss": best.get("test_loss"),
    "validation_examples": 0 if data.x_val is None else len(data.x_val),
    "train_seconds": meta["train_seconds"],
    "compile_seconds": meta["compile_seconds"],
    "eval_seconds": meta["eval_seconds"],
    "checkpoint_seconds": meta["checkpoint_seconds"],
    "steps_per_second": steps / meta["train_seconds"] if meta["train_seconds"] else None,
    # train_seconds is the group's: `members` runs shared every timed chunk.
    "trained_side_by_side": members,
    "device": f"{device.platform}:{device.device_kind}",
    "devices": int(config.get("num_devices", 1) or jax.device_count()),
    "jax_version": jax.__version__,
    "flax_version": md.version("flax"),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  if "diverged_at_step" in meta:
    summary["diverged_at_step"] = meta["diverged_at_step"]
  if last:
    summary.update(evaluator.summary(last))
  return summary
