"""Machines and money: vendor peaks, this machine's measured peak, energy, dollars, break-even.

Named profiles carry the vendors' dense peaks; price, power and MFU are assumptions the user
overrides. This machine's peak is measured with a large matmul, so its utilization figures are
against what it can actually do.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from research.cost import CostError


@dataclasses.dataclass(frozen=True)
class HardwareProfile:
  """Peak arithmetic and power of a machine, and what an hour of it costs.

  Named accelerator figures are the vendors' dense peaks; price and power are assumptions the
  user overrides (--price-per-hour, --power-watts). `mfu_*` are the model-FLOP utilizations
  assumed when a profile is not the machine the times were measured on.
  """

  name: str
  peak_flops: float
  memory_bandwidth: float | None
  power_watts: float
  price_per_hour: float
  precision: str = "float32"
  mfu_train: float = 0.3
  mfu_batch: float = 0.3
  mfu_realtime: float = 0.01
  measured: bool = False


PROFILES: dict[str, HardwareProfile] = {
  "h100-sxm-bf16": HardwareProfile("h100-sxm-bf16", 989e12, 3.35e12, 700.0, 3.00, "bfloat16"),
  "h100-sxm-fp32": HardwareProfile("h100-sxm-fp32", 67e12, 3.35e12, 700.0, 3.00),
  "a100-sxm-bf16": HardwareProfile("a100-sxm-bf16", 312e12, 2.04e12, 400.0, 1.50, "bfloat16"),
  "l4-bf16": HardwareProfile("l4-bf16", 121e12, 0.3e12, 72.0, 0.70, "bfloat16"),
}


def get_profile(
  name: str, price_per_hour: float | None = None, power_watts: float | None = None
) -> HardwareProfile:
  if name not in PROFILES:
    raise CostError(
      f"unknown hardware profile {name!r}; choose one of: "
      f"{', '.join(sorted(PROFILES))} (or 'this-machine')"
    )
  p = PROFILES[name]
  return dataclasses.replace(
    p,
    price_per_hour=p.price_per_hour if price_per_hour is None else price_per_hour,
    power_watts=p.power_watts if power_watts is None else power_watts,
  )


def measure_peak_flops(
  n: int = 1024, repeats: int = 10, dtype=jnp.float32, device: jax.Device | None = None
) -> dict[str, float]:
  """Achieved FLOP/s of a large square matmul: this machine's practical peak."""
  device = device or jax.devices()[0]
  key = jax.random.key(0)
  a = jax.device_put(jax.random.normal(key, (n, n), dtype), device)
  b = jax.device_put(jax.random.normal(jax.random.fold_in(key, 1), (n, n), dtype), device)
  matmul = jax.jit(jnp.matmul).lower(a, b).compile()
  matmul(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    matmul(a, b).block_until_ready()
    times.append(time.perf_counter() - t)
  best = min(times)
  return {
    "peak_flops": 2.0 * n**3 / best,
    "matmul_n": n,
    "dtype": jnp.dtype(dtype).name,
    "median_flops": 2.0 * n**3 / float(np.median(times)),
  }


def this_machine_profile(
  peak_flops: float, power_watts: float, price_per_hour: float
) -> HardwareProfile:
  return HardwareProfile(
    "this-machine", peak_flops, None, power_watts, price_per_hour, measured=True
  )


def break_even(training_cost: float, cost_per_prediction: float) -> float:
  """Predictions after which cumulative inference cost equals the training run's cost."""
  if cost_per_prediction <= 0 or not math.isfinite(cost_per_prediction):
    raise CostError(f"cost per prediction must be positive and finite, got {cost_per_prediction}")
  if training_cost < 0:
    raise CostError(f"training cost must be non-negative, got {training_cost}")
  return training_cost / cost_per_prediction


def energy_and_money(seconds: float, profile: HardwareProfile) -> dict[str, float]:
  return {
    "joules": seconds * profile.power_watts,
    "dollars": seconds * profile.price_per_hour / 3600.0,
  }
