"""The timing harness: calls timed one by one, blocking on each result, and their statistics as
medians and tails, never means alone (shared machines have outliers)."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np


def median_and_percentiles(
  samples: Sequence[float], percentiles: Sequence[float] = (90, 99)
) -> dict[str, float]:
  """p50 plus the given tail percentiles, min and max, of a list of timings."""
  a = np.asarray(samples, dtype=np.float64)
  if a.size == 0:
    raise ValueError("no timing samples")
  out = {"p50": float(np.median(a)), "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}
  for p in percentiles:
    out[f"p{p:g}"] = float(np.percentile(a, p))
  return out


def time_calls(fn: Callable[[], Any], n_calls: int, warmup: int = 10) -> np.ndarray:
  """Wall seconds of each of `n_calls` calls of `fn` (which must block), after `warmup` calls."""
  for _ in range(warmup):
    fn()
  out = np.empty(n_calls)
  for i in range(n_calls):
    t = time.perf_counter()
    fn()
    out[i] = time.perf_counter() - t
  return out


def stats_us(seconds: np.ndarray) -> dict[str, float]:
  return {
    f"{k}_us" if k != "n" else k: (v * 1e6 if k != "n" else v)
    for k, v in median_and_percentiles(seconds, (90, 99)).items()
  }
