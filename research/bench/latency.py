"""Real-time and batch inference timings of an engine, each call blocking on its result.

Real-time is batch 1 through the serving path (`Engine.logits`: input checks, padding logic,
numpy in and out) beside two floors the engine names (`Engine.timing_calls`): the bare call (for
`jax`, the compiled `apply` called directly on the same numpy input, its result fetched to numpy)
and the compute floor (engine-resident input, blocking, nothing fetched). The three run in
alternating blocks so the machine's noise falls on all alike. Batch is a sweep of compiled batch
sizes on engine-resident inputs: throughput, per-example time, and where throughput saturates.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from research.bench.timing import median_and_percentiles, stats_us, time_calls


def realtime_latency(
  predictor, example: np.ndarray, n_calls: int = 2000, blocks: int = 10
) -> dict[str, Any]:
  """Batch-1 latency of `predictor.logits`, of the bare jitted call and of compute alone."""
  example = predictor.check_input(example)[:1]
  b = predictor.padded_size(1)
  x_host = np.concatenate([example, np.zeros((b - 1, *predictor.input_shape), np.float32)])
  sides = {"serving": lambda: predictor.logits(example), **predictor.timing_calls(x_host)}
  per_block = max(1, n_calls // blocks)
  times: dict[str, list[np.ndarray]] = {k: [] for k in sides}
  for _ in range(blocks):
    for name, fn in sides.items():
      times[name].append(time_calls(fn, per_block, warmup=5))
  seconds = {k: np.concatenate(v) for k, v in times.items()}
  out: dict[str, Any] = {k: stats_us(v) for k, v in seconds.items()}
  out["serving_over_floor_p50"] = out["serving"]["p50_us"] / out["floor"]["p50_us"]
  out["serving_over_compute_p50"] = out["serving"]["p50_us"] / out["compute"]["p50_us"]
  out["samples_us"] = {k: v * 1e6 for k, v in seconds.items()}
  return out


def batch_sweep(
  predictor,
  batch_sizes: Sequence[int] | None = None,
  seconds_per_size: float = 0.3,
  min_calls: int = 5,
  max_calls: int = 2000,
  rng_seed: int = 0,
) -> list[dict[str, Any]]:
  """One record per compiled batch size: median call time, examples/s, µs per example.

  Each size gets about `seconds_per_size` of timed calls (at least `min_calls`) on a random
  device-resident input, so big batches are not starved and small ones not over-sampled.
  """
  sizes = predictor.batch_sizes if batch_sizes is None else tuple(batch_sizes)
  rng = np.random.default_rng(rng_seed)
  records = []
  for b in sizes:
    if b not in predictor.batch_sizes:
      raise ValueError(f"batch size {b} was not compiled; compiled: {list(predictor.batch_sizes)}")
    x = rng.standard_normal((b, *predictor.input_shape), np.float32)
    call = predictor.timing_calls(x)["compute"]
    probe = time_calls(call, 3, warmup=2)
    n = int(np.clip(seconds_per_size / max(np.median(probe), 1e-7), min_calls, max_calls))
    stats = median_and_percentiles(time_calls(call, n, warmup=0), (90, 99))
    records.append(
      {
        "batch_size": b,
        "calls": n,
        "call_p50_us": stats["p50"] * 1e6,
        "call_p90_us": stats["p90"] * 1e6,
        "call_p99_us": stats["p99"] * 1e6,
        "examples_per_s": b / stats["p50"],
        "us_per_example": stats["p50"] * 1e6 / b,
        "compile_s": predictor.compile_seconds.get(b),
      }
    )
  return records


def saturation_batch_size(records: Sequence[dict[str, Any]], fraction: float = 0.9) -> int:
  """Smallest batch size reaching `fraction` of the sweep's highest throughput.

  Past it, bigger batches buy little throughput and cost latency in proportion to their size.
  """
  if not records:
    raise ValueError("no sweep records")
  best = max(r["examples_per_s"] for r in records)
  return min(r["batch_size"] for r in records if r["examples_per_s"] >= fraction * best)


def interleaved_latency(
  engines: dict[str, Any], example: np.ndarray, n_calls: int = 2000, blocks: int = 20
) -> dict[str, dict[str, float]]:
  """Batch-1 serving latency (`logits` on one example) of several engines, their calls
  interleaved in blocks, so that the machine's drift over the run falls on all of them alike:
  engines timed one after another, minutes apart, can differ by more than the engines do."""
  per_block = max(1, n_calls // blocks)
  times: dict[str, list[np.ndarray]] = {name: [] for name in engines}
  inputs = {name: e.check_input(example)[:1] for name, e in engines.items()}
  for _ in range(blocks):
    for name, engine in engines.items():
      x = inputs[name]
      times[name].append(time_calls(lambda e=engine, x=x: e.logits(x), per_block, warmup=5))
  return {name: stats_us(np.concatenate(v)) for name, v in times.items()}
