"""The scaling study end to end: train the grid, fit the law, measure costs, plan, check.

Every stage is resumable: the grid and the check are sweeps (finished runs are skipped, killed
ones resume), and the measured costs are kept in WORKDIR/costs.json for the runs they came from.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Sequence

import numpy as np

from research import workdir as workdir_lib
from research.studies.scaling import ScalingError, envelope, fit, plan
from research.studies.scaling.check import run_check, target_loss
from research.studies.scaling.grid import Preset, Size, grid_runs
from research.studies.scaling.law import PUBLISHED, Law

PROFILE_NAMES = ("h100-sxm-bf16", "a100-sxm-bf16", "l4-bf16")


def run_study(
  preset: Preset,
  workdir: str,
  workers: int = 0,
  check: bool = True,
  price_per_hour: float = 0.05,
  argv: Sequence[str] = (),
) -> dict[str, Any]:
  """Everything the report shows, as a JSON-able dict."""
  from research.training import sweep

  t0 = time.perf_counter()
  runs = grid_runs(preset)
  grid_dir = os.path.join(workdir, "grid")
  finished_before = sum(sweep.is_finished(os.path.join(grid_dir, r.name)) for r in runs)
  grid_report = sweep.run_grid(preset.spec, runs, grid_dir, workers, argv=argv)
  grid_calls = _record_grid_call(
    workdir, time.perf_counter() - t0, len(runs) - finished_before, grid_report
  )
  grid = [_grid_entry(grid_dir, r.name, preset) for r in runs]
  fits = _fits(grid)
  law = fits["law"]
  costs = _costs(workdir, preset, grid, os.sched_getaffinity(0))
  models = _cost_models(costs, price_per_hour)
  target = target_loss(law, grid)
  candidates = [s.params for s in preset.sizes]
  curves = {}
  for name, model in models.items():
    curves[name] = plan.demand_curve(law, target, plan.DEMANDS, model, candidates=candidates)
  continuous = plan.demand_curve(law, target, plan.DEMANDS, models["flops"])
  result = {
    "preset": {
      "sizes": [dataclasses.asdict(s) | {"params": s.params} for s in preset.sizes],
      "budget_steps": list(preset.budget_steps),
      "tokens_per_step": preset.tokens_per_step,
      "config": preset.spec,
      "overrides": list(preset.overrides),
    },
    "grid": grid,
    "grid_timing": {
      "wall_seconds": sum(c["wall_seconds"] for c in grid_calls if c["runs_trained"]),
      "calls": grid_calls,
      "sum_train_seconds": sum(g["train_seconds"] for g in grid),
      "sum_compile_seconds": sum(g["compile_seconds"] for g in grid),
      "sum_eval_seconds": sum(g["eval_seconds"] for g in grid),
      "workers": (grid_report.get("timing") or {}).get("workers"),
    },
    "fit": fits["summary"],
    "costs": costs,
    "plan": {
      "target_loss": target,
      "candidates": candidates,
      "curves": curves,
      "flops_continuous": continuous,
      "findings": {name: plan.findings(c) for name, c in curves.items()},
      "findings_flops_continuous": plan.findings(continuous),
    },
    "grid_findings": _grid_findings(grid),
  }
  if check:
    result["check"] = run_check(workdir, preset, law, fits, target, models, costs, workers, argv)
  result["seconds"] = time.perf_counter() - t0
  return result


def _record_grid_call(workdir: str, seconds: float, trained: int, report: dict) -> list[dict]:
  """The grid's wall time over every call that trained some of it (WORKDIR/grid_timing.json):
  a re-run that only skips finished runs keeps the first call's time as the grid's."""
  from research.outputs import write_json

  path = os.path.join(workdir, "grid_timing.json")
  calls = (_read_json(path) or {}).get("calls", [])
  workers = (report.get("timing") or {}).get("workers")
  calls.append({"wall_seconds": seconds, "runs_trained": trained, "workers": workers})
  write_json(path, {"calls": calls})
  return calls


def _grid_entry(grid_dir: str, name: str, preset: Preset) -> dict[str, Any]:
  workdir = os.path.join(grid_dir, name)
  summary = workdir_lib.read_summary(workdir)
  config = workdir_lib.read_config(workdir)
  steps = summary["steps"]
  tokens_per_step = config.batch_size * config.model.n_ctx
  curve_steps, curve_loss = _eval_curve(workdir)
  return {
    "name": name,
    "size": config.study.size,
    "params": int(config.study.non_embedding_params),
    "total_params": int(summary["params"]),
    "tokens": int(steps * tokens_per_step),
    "steps": int(steps),
    "val_loss": float(summary["final_test_loss"]),
    "status": summary.get("status", "finished"),
    "train_seconds": float(summary["train_seconds"]),
    "compile_seconds": float(summary["compile_seconds"]),
    "eval_seconds": float(summary["eval_seconds"]),
    "curve": {
      "tokens": [int(s * tokens_per_step) for s in curve_steps],
      "val_loss": [float(v) for v in curve_loss],
    },
    "workdir": workdir,
  }


def _eval_curve(workdir: str) -> tuple[list[int], list[float]]:
  """The run's validation loss at each evaluation, as TensorBoard reads it (test/loss: the run's
  held-out split is the corpus's validation split)."""
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  acc = EventAccumulator(workdir, size_guidance={"scalars": 0})
  acc.Reload()
  if "test/loss" not in acc.Tags().get("scalars", []):
    return [], []
  by_step = {e.step: e.value for e in acc.Scalars("test/loss")}
  steps = sorted(by_step)
  return steps, [by_step[s] for s in steps]


def _fits(grid: Sequence[dict]) -> dict[str, Any]:
  usable = [g for g in grid if g["status"] == "finished" and math.isfinite(g["val_loss"])]
  n = np.array([g["params"] for g in usable], float)
  d = np.array([g["tokens"] for g in usable], float)
  loss = np.array([g["val_loss"] for g in usable], float)
  boot = fit.bootstrap_parametric(n, d, loss)
  law: Law = boot["law"]
  curves = [
    {
      "params": g["params"],
      "tokens": np.array(g["curve"]["tokens"]),
      "loss": np.array(g["curve"]["val_loss"]),
    }
    for g in usable
    if len(g["curve"]["tokens"]) >= 2
  ]
  try:
    approach1 = envelope.envelope(curves, points=80)
  except ScalingError as e:
    approach1 = {"error": str(e)}
  compute = 6.0 * float(np.max(n * d))
  summary = {
    "runs": len(usable),
    "approach3": {
      **law.as_dict(),
      "ci": boot["ci"],
      **{k: v for k, v in boot.items() if k not in ("law", "ci", "sample_laws")},
    },
    "approach1": approach1,
    "compute_optimum_at_largest_run": fit.compute_optimal_summary(law, compute),
    "published": {
      name: {
        **p.as_dict(),
        "tokens_per_param_at_same_compute": float(p.tokens_per_param_at(compute)),
      }
      for name, p in PUBLISHED.items()
    },
    "residuals_by_size": fit.residuals_by_size(n, d, loss, law),
    "without_smallest": _fit_without_smallest(n, d, loss),
  }
  return {"law": law, "summary": summary, "sample_laws": boot["sample_laws"], "grid": usable}


SMALL_PARAMS = 1e4  # the fit again without the sizes below this, to see whether they bend the law


def _fit_without_smallest(n, d, loss) -> dict[str, Any] | None:
  kept = n >= SMALL_PARAMS
  if kept.sum() < fit.MIN_RUNS or len(np.unique(n[kept])) < 2 or kept.all():
    return None
  law = fit.fit_above(n, d, loss, SMALL_PARAMS)
  return {
    "min_params": SMALL_PARAMS,
    "runs": int(kept.sum()),
    **law.as_dict(),
    "residuals_by_size": fit.residuals_by_size(n, d, loss, law),
  }


def _costs(workdir: str, preset: Preset, grid: Sequence[dict], cores) -> dict[str, Any]:
  """Per size, measured training and serving seconds per token (cached in WORKDIR/costs.json
  for the runs they came from)."""
  from research.outputs import write_json
  from research.studies.scaling.costs import grid_train_seconds_per_token, measure_costs

  longest = {}
  for g in grid:
    if g["size"] not in longest or g["tokens"] > longest[g["size"]]["tokens"]:
      longest[g["size"]] = g
  path = os.path.join(workdir, "costs.json")
  key = {
    "runs": sorted(g["workdir"] for g in longest.values()),
    "measure": _jsonable(preset.measure),
  }
  cached = _read_json(path)
  if cached and cached.get("key") == key:
    measured = cached["measured"]
  else:
    measured = measure_costs([g["workdir"] for g in longest.values()], preset.measure, max(cores))
    write_json(path, {"key": key, "measured": measured})
  grid_train = grid_train_seconds_per_token(grid)
  per_size = {}
  for size, g in sorted(longest.items(), key=lambda kv: kv[1]["params"]):
    m = measured[g["workdir"]]
    per_size[size] = {
      "params": g["params"],
      "measured_on": g["name"],
      "train_seconds_per_token": m["train"]["seconds_per_token"],
      "grid_train_seconds_per_token": grid_train[size],
      "serve_realtime_seconds_per_token": m["realtime_seconds_per_token"],
      "serve_best_seconds_per_token": m["best_seconds_per_token"],
      "best_slots": m["best_slots"],
      "detail": m,
    }
  return {"per_size": per_size, "settings": _jsonable(preset.measure)}


def _cost_models(costs: dict[str, Any], price_per_hour: float) -> dict[str, plan.CostModel]:
  from research.cost.hardware import PROFILES

  sizes = list(costs["per_size"].values())
  params = [s["params"] for s in sizes]
  train = [s["train_seconds_per_token"] for s in sizes]
  realtime = plan.measured_cost(
    "seconds, batch-1 serving",
    params,
    train,
    [s["serve_realtime_seconds_per_token"] for s in sizes],
  )
  batched = plan.measured_cost(
    "seconds, best-batch serving", params, train, [s["serve_best_seconds_per_token"] for s in sizes]
  )
  models = {
    "flops": plan.flops_cost(),
    "seconds_realtime": realtime,
    "seconds_batched": batched,
    "dollars_this_machine": plan.scaled(
      batched, price_per_hour / 3600.0, f"$ on this machine at ${price_per_hour}/h", "$"
    ),
  }
  for name in PROFILE_NAMES:
    p = PROFILES[name]
    per_flop = p.price_per_hour / 3600.0 / p.peak_flops
    models[f"dollars_{name}"] = plan.CostModel(
      name=f"$ on {name} (MFU train {p.mfu_train}, serve {p.mfu_batch})",
      unit="$",
      train_per_token=lambda n, k=per_flop / p.mfu_train: 6.0 * np.asarray(n, float) * k,
      serve_per_token=lambda n, k=per_flop / p.mfu_batch: 2.0 * np.asarray(n, float) * k,
    )
  return models


def _grid_findings(grid: Sequence[dict]) -> dict[str, Any]:
  """Does loss keep falling past 20 tokens per parameter? Per size, its runs beyond 20 in order
  of tokens: every step down, and the most tokens per parameter at which it still fell."""
  per_size = {}
  for size in sorted({g["size"] for g in grid}):
    runs = sorted(
      (g for g in grid if g["size"] == size and g["tokens"] / g["params"] >= 20),
      key=lambda g: g["tokens"],
    )
    if len(runs) < 2:
      continue
    falls = [b["val_loss"] < a["val_loss"] for a, b in zip(runs, runs[1:])]
    per_size[size] = {
      "runs_past_20": len(runs),
      "always_falls": all(falls),
      "max_tokens_per_param_still_falling": max(
        (
          b["tokens"] / b["params"] for a, b in zip(runs, runs[1:]) if b["val_loss"] < a["val_loss"]
        ),
        default=None,
      ),
    }
  return {
    "loss_falls_past_20_tokens_per_param": bool(per_size)
    and all(v["always_falls"] for v in per_size.values()),
    "per_size": per_size,
  }


def _read_json(path: str):
  import json

  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _jsonable(x):
  if isinstance(x, dict):
    return {k: _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  return x


__all__ = ["run_study", "Size"]
