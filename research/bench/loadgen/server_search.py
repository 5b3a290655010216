"""The Server scenario's capacity: the highest Poisson QPS whose p99 stays under the bound.

Starts from a fraction of the capacity measured without LoadGen and brackets it between a VALID
and an INVALID run, bisecting geometrically. Each trial is `scenarios.run_scenario`, looked up at
call time (tests replace it there).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import numpy as np

from research.bench.loadgen import scenarios
from research.bench.loadgen.scenarios import (
  DEFAULT_DURATION_MS,
  DEFAULT_SERVER_LOAD,
  ScenarioSettings,
  estimate_server_capacity_qps,
)


@dataclasses.dataclass(frozen=True)
class ServerSearch:
  """How the QPS search walks: from `start_qps` (default: DEFAULT_SERVER_LOAD of
  `estimate_server_capacity_qps`) by factors of `growth` until a VALID and an INVALID run bracket
  the answer, then bisecting until they are within `rel_tolerance` or `max_runs` runs (retries
  included) are spent. With `retry_marginal`, an INVALID run that kept up on average (completed
  >= 95% of scheduled: only its tail failed) is run once more before it bounds the search, since
  one stall on a shared machine would otherwise cap the answer; overloaded runs are never
  retried."""

  start_qps: float | None = None
  growth: float = 2.0
  rel_tolerance: float = 0.05
  max_runs: int = 10
  retry_marginal: bool = True


def find_server_qps(
  predictor,
  samples: np.ndarray,
  log_root: str,
  settings: ScenarioSettings | None = None,
  search: ServerSearch = ServerSearch(),
) -> dict[str, Any]:
  """Highest Server target QPS whose run is VALID (p99 within `settings.latency_bound_ms`),
  each trial a Server run with `settings` (default: batched, 10 ms) at its own target QPS.

  Each run has its own log dir `log_root/trial_NN_<qps>qps`. Returns {'qps', 'best' (the VALID
  record, or None), 'trials', 'bracket', ...}.
  """
  settings = settings or ScenarioSettings()
  if search.max_runs < 1 or search.growth <= 1:
    raise ValueError("max_runs must be >= 1 and growth > 1")
  if settings.mode != "performance":
    raise ValueError("the Server search runs in performance mode")
  samples = predictor.check_input(samples)
  os.makedirs(log_root, exist_ok=True)
  start = search.start_qps
  capacity = None if start else estimate_server_capacity_qps(predictor, samples, settings.batching)
  qps = float(start) if start else DEFAULT_SERVER_LOAD * capacity
  trials: list[dict[str, Any]] = []
  best: dict[str, Any] | None = None
  lo, hi = 0.0, math.inf  # highest VALID, lowest INVALID target QPS so far
  t0 = time.perf_counter()

  def trial(target: float) -> dict[str, Any]:
    log_dir = os.path.join(log_root, f"trial_{len(trials):02d}_{target:.0f}qps")
    record = scenarios.run_scenario(
      predictor, samples, "Server", log_dir, dataclasses.replace(settings, target_qps=target)
    )
    trials.append(_trial_row(target, record, log_dir))
    return record

  while len(trials) < search.max_runs:
    record = trial(qps)
    if (
      not record["valid"]
      and search.retry_marginal
      and len(trials) < search.max_runs
      and _kept_up(record)
    ):
      record = trial(qps)
      trials[-1]["retry"] = True
    if record["valid"]:
      lo = qps
      if best is None or qps > best["settings"]["target_qps"]:
        best = record
    else:
      hi = min(hi, qps)
    if math.isinf(hi):
      qps *= search.growth  # every run so far VALID: grow
    elif lo == 0.0:
      qps /= search.growth  # every run so far INVALID: shrink
    elif hi / lo <= 1 + search.rel_tolerance:
      break
    else:
      qps = math.sqrt(lo * hi)  # bisect geometrically
  duration_ms = DEFAULT_DURATION_MS if settings.duration_ms is None else settings.duration_ms
  return {
    "qps": lo,
    "best": best,
    "trials": trials,
    "bracket": {"valid_qps": lo, "invalid_qps": None if math.isinf(hi) else hi},
    "latency_bound_ms": float(settings.latency_bound_ms),
    "batching": bool(settings.batching),
    "estimated_capacity_qps": capacity,
    "duration_ms": int(duration_ms),
    "log_root": os.path.abspath(log_root),
    "wall_s": time.perf_counter() - t0,
  }


def _trial_row(target: float, record: dict[str, Any], log_dir: str) -> dict[str, Any]:
  """One trial of the search, as the result lists it."""
  return {
    "target_qps": target,
    "valid": record["valid"],
    "p99_ms": record["latency_ms"].get("p99"),
    "completed_samples_per_s": record["samples_per_s"],
    "mean_batch_size": record["sut"]["mean_batch_size"],
    "invalid_reason": record["invalid_reason"],
    "log_dir": log_dir,
    "wall_s": record["wall_s"],
  }


def _kept_up(record: dict[str, Any]) -> bool:
  """Whether a Server run completed (nearly) the samples/s it was sent: a tail, not a backlog."""
  completed, scheduled = record.get("samples_per_s"), record.get("scheduled_qps")
  return bool(completed and scheduled and completed >= 0.95 * scheduled)
