"""Measured costs per model size: training seconds per token, and serving seconds per token from
the serving engine, at batch 1 (real time) and at its best slot count.

Training: each grid run's train seconds (compilation and evaluation excluded) over the tokens it
trained, the median over a size's budgets; the runs trained on sweep workers, one per core, each
one XLA thread. Serving: the same trained weights (the size's longest run) on `DecodeEngine`,
in a worker pinned the same way, run alone after the grid: time per output token at one slot,
and tokens/s with every slot busy at each slot count, the best kept. Every figure is seconds on
one core of this machine.
"""

from __future__ import annotations

import statistics
from typing import Any, Mapping, Sequence


def serving_job(workdirs: Sequence[str], measure: Mapping[str, Any]) -> dict[str, Any]:
  """In a worker: each run's serving costs (keyed by workdir)."""
  import numpy as np

  from research.bench.generation import engine_decode_sweep, engine_realtime_generation
  from research.serving.decode_engine import for_serving
  from research.serving.restore import load_run

  out = {}
  for workdir in workdirs:
    run = load_run(workdir)
    model = for_serving(run.model)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, model.num_classes, measure["prompt_tokens"]).tolist()
    realtime = engine_realtime_generation(
      model, run.params, prompt, measure["new_tokens"], measure["sequences"]
    )
    batched = engine_decode_sweep(
      model,
      run.params,
      measure["slots"],
      measure["prompt_tokens"],
      measure["new_tokens"],
      repeats=2,
    )
    best = max(batched, key=lambda r: r["tokens_per_second"])
    out[workdir] = {
      "realtime_tpot_p50_ms": realtime["tpot"]["p50_ms"],
      "realtime_tpot_p99_ms": realtime["tpot"].get("p99_ms"),
      "realtime_seconds_per_token": realtime["tpot"]["p50_ms"] / 1e3,
      "batched": [
        {"slots": r["batch_size"], "tokens_per_second": r["tokens_per_second"]} for r in batched
      ],
      "best_slots": best["batch_size"],
      "best_seconds_per_token": 1.0 / best["tokens_per_second"],
    }
  return out


def measure_serving(
  workdirs: Sequence[str], measure: Mapping[str, Any], core: int
) -> dict[str, dict[str, Any]]:
  """`serving_job` on one worker pinned to `core`, alone on the machine's other work."""
  from research.training.workers import run_jobs

  done = run_jobs(
    serving_job,
    [("serving", (list(workdirs), dict(measure)))],
    [core],
    lambda name, r: f"{len(r)} sizes",
    desc="serving costs",
  )
  return done["serving"]


def training_seconds_per_token(grid: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """Per size, the median over its runs of train seconds per training token."""
  per_size: dict[str, list[float]] = {}
  for run in grid:
    per_size.setdefault(run["size"], []).append(run["train_seconds"] / run["tokens"])
  return {size: statistics.median(v) for size, v in per_size.items()}
