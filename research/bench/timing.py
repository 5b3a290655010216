"""Timing statistics: medians and tails, never means alone (shared machines have outliers)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def median_and_percentiles(samples: Sequence[float], percentiles: Sequence[float] = (90, 99)
                           ) -> dict[str, float]:
  """p50 plus the given tail percentiles, min and max, of a list of timings."""
  a = np.asarray(samples, dtype=np.float64)
  if a.size == 0:
    raise ValueError("no timing samples")
  out = {"p50": float(np.median(a)), "min": float(a.min()), "max": float(a.max()),
         "n": int(a.size)}
  for p in percentiles:
    out[f"p{p:g}"] = float(np.percentile(a, p))
  return out
