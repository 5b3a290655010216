"""Item 5 of the study: train the model the planner recommends, and the Chinchilla-optimal one
for the same loss, then set predicted against measured loss and cost (and say why a miss is)."""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

from research import workdir as workdir_lib
from research.studies.scaling import ScalingError, plan
from research.studies.scaling.grid import Preset, single_run
from research.studies.scaling.law import Law

CHECK_MAX_BUDGET_FACTOR = 4  # the check trains at most this many times the grid's largest budget


def target_loss(law: Law, grid: Sequence[dict]) -> float:
  """The check's target: the best loss the grid reached at its middle budget, rounded to 0.01
  (a loss every size from the middle up reaches with a few million tokens)."""
  budgets = sorted({g["tokens"] for g in grid})
  middle = budgets[len(budgets) // 2]
  best = min(g["val_loss"] for g in grid if g["tokens"] == middle)
  target = math.ceil(best * 100) / 100
  if target <= law.E:
    raise ScalingError(
      f"the fitted law's floor E={law.E:.3f} is above the grid's losses; the fit failed"
    )
  return target


def run_check(
  workdir: str,
  preset: Preset,
  law: Law,
  fits: dict,
  target: float,
  models: dict,
  costs: dict,
  workers: int,
  argv: Sequence[str],
) -> dict[str, Any]:
  """Item 5: train the model the planner recommends at a high demand, and the Chinchilla-optimal
  one for the same loss; measure both losses and costs."""
  from research.training import sweep

  model = models["seconds_batched"]
  candidates = [s.params for s in preset.sizes]
  max_tokens = CHECK_MAX_BUDGET_FACTOR * max(preset.budget_steps) * preset.tokens_per_step
  chinchilla = plan.chinchilla_for_loss(law, target, model, candidates=candidates)
  demand, recommended = _check_demand(law, target, model, candidates, chinchilla, max_tokens)
  # The Chinchilla-optimal model (chosen for training cost alone), costed at the same demand.
  chinchilla = plan.cost_at(law, target, demand, model, chinchilla["params"])
  plans = {"recommended": recommended, "chinchilla": chinchilla}
  runs = {}
  for role, p in plans.items():
    size = next(s for s in preset.sizes if s.params == p["params"])
    steps = _steps_for(p["train_tokens"], preset)
    runs[role] = (size, steps, single_run(size, steps, preset))
  unique = {r.name: r for _, _, r in runs.values()}
  check_dir = os.path.join(workdir, "check")
  sweep.run_grid(preset.spec, list(unique.values()), check_dir, workers, argv=argv)
  out = {
    "target_loss": target,
    "demand_tokens": demand,
    "miss_explained_by_grid": _nearest_grid_residuals(fits, runs, preset),
    "cost_model": model.name,
    "rule": (
      f"target: the best validation loss at the grid's middle budget, rounded up to 0.01; demand: "
      f"10x the first demand at which the optimum leaves the Chinchilla-optimal model (training "
      f"still a fair share of the cost), its recommended model training on at most "
      f"{CHECK_MAX_BUDGET_FACTOR}x the grid's largest budget"
    ),
  }
  per_size = {s["params"]: s for s in costs["per_size"].values()}
  for role, (size, steps, run) in runs.items():
    w = os.path.join(check_dir, run.name)
    summary = workdir_lib.read_summary(w)
    c = per_size[size.params]
    tokens = steps * preset.tokens_per_step
    train_s = float(summary["train_seconds"])
    out[role] = {
      "size": size.name,
      "params": size.params,
      "planned_tokens": plans[role]["train_tokens"],
      "trained_tokens": tokens,
      "predicted_loss": float(law.loss(size.params, tokens)),
      "predicted_loss_interval": _loss_interval(fits, size.params, tokens),
      "measured_loss": float(summary["final_test_loss"]),
      "measured_train_seconds": train_s,
      "predicted_cost_s": plans[role]["total_cost"],
      "measured_cost_s": train_s + c["serve_best_seconds_per_token"] * demand,
      "serve_seconds_per_token": c["serve_best_seconds_per_token"],
      "workdir": w,
    }
  rec, chin = out["recommended"], out["chinchilla"]
  lo, hi = rec["predicted_loss_interval"]
  out.update(
    {
      "predicted_loss": rec["predicted_loss"],
      "measured_loss": rec["measured_loss"],
      "recommended_cost_s": rec["measured_cost_s"],
      "chinchilla_cost_s": chin["measured_cost_s"],
      "reaches_target_within_interval": bool(lo <= rec["measured_loss"] <= hi),
      "recommended_cheaper": bool(rec["measured_cost_s"] < chin["measured_cost_s"]),
      "same_model": rec["size"] == chin["size"],
    }
  )
  return out


def _check_demand(law, target, model, candidates, chinchilla, max_tokens) -> tuple[float, dict]:
  """A high demand that still tests the trade: 10x the first demand on the curve at which the
  optimum leaves the Chinchilla-optimal model (there training is still a fair share of the
  total; far beyond, serving alone decides), or the curve's highest when it never leaves; then
  down the curve until the recommended model's training fits the check's budget."""
  demands = sorted(plan.DEMANDS)
  plans = [plan.optimum(law, target, d, model, candidates=candidates) for d in demands]
  leaves = [i for i, p in enumerate(plans) if p["params"] != chinchilla["params"]]
  start = min(leaves[0] + 2, len(demands) - 1) if leaves else len(demands) - 1  # 2 = 10x
  for i in range(start, -1, -1):
    if plans[i]["train_tokens"] <= max_tokens:
      return demands[i], plans[i]
  raise ScalingError(
    f"no demand's recommended model reaches loss {target:.3f} within {max_tokens:,.0f} training "
    f"tokens; the check cannot train it here"
  )


def _steps_for(tokens: float, preset: Preset) -> int:
  steps = math.ceil(tokens / preset.tokens_per_step / 16) * 16
  return max(16, steps)


def _nearest_grid_residuals(fits: dict, runs: dict, preset: Preset) -> dict[str, Any]:
  """Per check model, how far the grid's own run of that size nearest in tokens sat from the
  fit: a miss of the same sign and size is the law's error at that size, not the check's."""
  out = {}
  law, grid = fits["law"], fits["grid"]
  for role, (size, steps, _) in runs.items():
    tokens = steps * preset.tokens_per_step
    same = [g for g in grid if g["params"] == size.params]
    if not same:
      continue
    g = min(same, key=lambda g: abs(math.log(g["tokens"] / tokens)))
    fitted = float(law.loss(g["params"], g["tokens"]))
    out[role] = {
      "grid_run": g["name"],
      "tokens": g["tokens"],
      "relative_residual": (g["val_loss"] - fitted) / fitted,
    }
  return out


def _loss_interval(fits: dict, params: float, tokens: float) -> list[float]:
  """The bootstrap's 90 % spread of the predicted loss at (params, tokens)."""
  samples = fits["sample_laws"]
  if not samples:
    return [float("nan"), float("nan")]
  values = [Law(**s).loss(params, tokens) for s in samples]
  return [float(np.percentile(values, 5)), float(np.percentile(values, 95))]
