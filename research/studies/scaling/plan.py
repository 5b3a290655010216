"""The inference-aware optimum (Sardana et al. 2024, "Beyond Chinchilla-Optimal").

For a target loss and an inference demand D_inf (tokens served over the model's life), choose the
N that minimises train_per_token(N) * D_tr(N) + serve_per_token(N) * D_inf, where
D_tr(N) = law.tokens_for_loss(N, target) is what N needs to reach the target. With demand 0 and
the FLOPs cost (6N, 2N) this is Chinchilla's compute optimum for that loss; as demand grows the
best model shrinks and trains longer. The cost per token may be FLOPs, measured seconds on this
machine, or dollars, so the same search answers all three.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np
from scipy import optimize

from research.studies.scaling import ScalingError
from research.studies.scaling.law import Law

PerToken = Callable[[np.ndarray], np.ndarray]

# The demands the study's curves span: tokens served over a model's life, half a decade apart.
DEMANDS = tuple(float(10.0**k) for k in np.arange(4, 13.01, 0.5))

# The default search: N from (1 + _FLOOR_GAP) times the smallest N that can reach the target, up
# to _RANGE_SPAN times it. The grid is uniform in log(N - N_min), so it is dense near the floor
# (where high demand pushes the optimum) and uniform in log N far above it.
_FLOOR_GAP = 1e-9
_RANGE_SPAN = 1e4
_GRID_POINTS = 3001
# Relative slack when checking a curve for monotonicity: the refinement finds N to about 1e-8.
_MONOTONE_SLACK = 1e-6


@dataclasses.dataclass(frozen=True)
class CostModel:
  """Cost per training token and per served token as functions of non-embedding params N.

  `measured_params` holds the sizes a measured model was built from (empty for an analytic one),
  so an answer outside them can say it was extrapolated.
  """

  name: str
  unit: str
  train_per_token: PerToken
  serve_per_token: PerToken
  measured_params: tuple[float, ...] = ()


def flops_cost() -> CostModel:
  """Sardana's formula: 6N FLOPs per training token, 2N per served token."""
  return CostModel(
    name="FLOPs",
    unit="FLOPs",
    train_per_token=lambda n: 6.0 * np.asarray(n, float),
    serve_per_token=lambda n: 2.0 * np.asarray(n, float),
  )


def _positive_finite(values, what: str) -> np.ndarray:
  array = np.asarray(values, float)
  if array.ndim != 1:
    raise ScalingError(f"{what} must be a 1-D list of numbers, got shape {array.shape}")
  if not np.all(np.isfinite(array)) or np.any(array <= 0):
    raise ScalingError(f"{what} must be positive and finite, got {array.tolist()}: fix the data")
  return array


def _loglog(params: np.ndarray, costs: np.ndarray) -> PerToken:
  """Piecewise-linear in log-log through the points, the end segments' slopes outside them."""
  log_n, log_c = np.log(params), np.log(costs)
  slope_low = (log_c[1] - log_c[0]) / (log_n[1] - log_n[0])
  slope_high = (log_c[-1] - log_c[-2]) / (log_n[-1] - log_n[-2])

  def per_token(n) -> np.ndarray:
    n = np.asarray(n, float)
    if np.any(~(n > 0)):
      raise ScalingError("a model size must be a positive number of parameters")
    x = np.log(n)
    y = np.interp(x, log_n, log_c)
    y = np.where(x < log_n[0], log_c[0] + slope_low * (x - log_n[0]), y)
    y = np.where(x > log_n[-1], log_c[-1] + slope_high * (x - log_n[-1]), y)
    return np.exp(y)

  return per_token


def measured_cost(
  name: str,
  params: Sequence[float],
  train_per_token: Sequence[float],
  serve_per_token: Sequence[float],
  unit: str = "s",
) -> CostModel:
  """A cost model from per-token costs measured at a few sizes, log-log linear between them."""
  sizes = _positive_finite(params, "measured params")
  train = _positive_finite(train_per_token, "measured training cost per token")
  serve = _positive_finite(serve_per_token, "measured serving cost per token")
  if len(sizes) < 2:
    raise ScalingError(f"measured_cost needs at least 2 model sizes, got {len(sizes)}: add sizes")
  if not len(sizes) == len(train) == len(serve):
    raise ScalingError(
      f"measured_cost got {len(sizes)} sizes but {len(train)} training and {len(serve)} serving"
      " costs: give one of each per size"
    )
  if len(np.unique(sizes)) != len(sizes):
    raise ScalingError(f"measured params repeat a size ({sizes.tolist()}): average them first")
  order = np.argsort(sizes)
  sizes, train, serve = sizes[order], train[order], serve[order]
  return CostModel(
    name=name,
    unit=unit,
    train_per_token=_loglog(sizes, train),
    serve_per_token=_loglog(sizes, serve),
    measured_params=tuple(float(s) for s in sizes),
  )


def scaled(cost: CostModel, factor: float, name: str, unit: str) -> CostModel:
  """The same cost times a constant (seconds to dollars at price_per_hour / 3600, say)."""
  if not (math.isfinite(factor) and factor > 0):
    raise ScalingError(f"a cost scale factor must be positive and finite, got {factor}")
  return CostModel(
    name=name,
    unit=unit,
    train_per_token=lambda n: factor * cost.train_per_token(n),
    serve_per_token=lambda n: factor * cost.serve_per_token(n),
    measured_params=cost.measured_params,
  )


def _check_target(law: Law, target_loss: float) -> float:
  """N_min, the size below which no amount of data reaches the target."""
  if not math.isfinite(target_loss):
    raise ScalingError(f"target loss must be a finite number, got {target_loss}")
  if target_loss <= law.E:
    raise ScalingError(
      f"target loss {target_loss:g} is at or below the law's irreducible loss E = {law.E:g}, which"
      f" no finite model reaches: pick a target above {law.E:g}"
    )
  return law.smallest_params_for_loss(target_loss)


def _check_demand(demand_tokens: float) -> float:
  demand = float(demand_tokens)
  if not (math.isfinite(demand) and demand >= 0):
    raise ScalingError(f"demand must be a finite number of tokens >= 0, got {demand_tokens}")
  return demand


def _costs(law: Law, target_loss: float, demand: float, cost: CostModel, n) -> tuple:
  """(train tokens, train cost, serve cost, total) for each N; inf where N cannot reach it."""
  n = np.asarray(n, float)
  tokens = law.tokens_for_loss(n, target_loss)
  with np.errstate(invalid="ignore", over="ignore"):
    train = np.where(np.isfinite(tokens), cost.train_per_token(n) * tokens, np.inf)
  serve = cost.serve_per_token(n) * demand
  return tokens, train, serve, train + serve


def cost_at(
  law: Law, target_loss: float, demand_tokens: float, cost: CostModel, params: float
) -> dict:
  """One model's plan: the tokens it needs to reach the target and what training and serving cost.

  Raises when `params` is too small to reach the target with any amount of data.
  """
  n_min = _check_target(law, target_loss)
  demand = _check_demand(demand_tokens)
  if not (math.isfinite(params) and params > n_min):
    raise ScalingError(
      f"a model of {params:g} params cannot reach loss {target_loss:g} with any data: it needs"
      f" more than {n_min:.4g}"
    )
  tokens, train, serve, total = (float(v) for v in _costs(law, target_loss, demand, cost, params))
  measured = cost.measured_params
  return {
    "params": float(params),
    "train_tokens": tokens,
    "tokens_per_param": tokens / params,
    "train_cost": train,
    "serve_cost": serve,
    "total_cost": total,
    "unit": cost.unit,
    "cost": cost.name,
    "demand_tokens": demand,
    "extrapolated": bool(measured) and not (measured[0] <= params <= measured[-1]),
  }


def _search_range(n_min: float, n_range) -> tuple[float, float]:
  if n_range is None:
    return n_min * (1 + _FLOOR_GAP), n_min * _RANGE_SPAN
  low, high = (float(v) for v in n_range)
  if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
    raise ScalingError(f"n_range must be (low, high) with 0 < low < high, got {n_range}")
  if high <= n_min:
    raise ScalingError(
      f"no N in n_range {n_range} reaches the target: it needs more than {n_min:.4g} params;"
      " widen n_range"
    )
  return max(low, n_min * (1 + _FLOOR_GAP)), high


def optimum(
  law: Law,
  target_loss: float,
  demand_tokens: float,
  cost: CostModel,
  n_range: tuple[float, float] | None = None,
  candidates: Sequence[float] | None = None,
) -> dict:
  """The N (and its training tokens) that reach the target loss at the least train + serve cost.

  `candidates`: choose among these sizes only (the architectures one can build); otherwise a
  search over N in `n_range` (default: just above the smallest N that can reach the target, up
  to 1e4 times it). The result says `at_range_edge` when the best N sits on the range's end,
  where the true optimum may lie outside it.
  """
  n_min = _check_target(law, target_loss)
  demand = _check_demand(demand_tokens)
  if candidates is not None:
    if n_range is not None:
      raise ScalingError("give candidates or n_range, not both")
    sizes = _positive_finite(candidates, "candidate params")
    if len(sizes) == 0:
      raise ScalingError("candidates is empty: give at least one model size")
    reachable = sizes[sizes > n_min]
    if len(reachable) == 0:
      raise ScalingError(
        f"no candidate reaches loss {target_loss:g}: the largest is {sizes.max():.4g} params and"
        f" it needs more than {n_min:.4g}; add larger candidates or raise the target"
      )
    totals = _costs(law, target_loss, demand, cost, reachable)[3]
    best = cost_at(law, target_loss, demand, cost, float(reachable[int(np.argmin(totals))]))
    best["at_range_edge"] = False
    return best

  low, high = _search_range(n_min, n_range)
  # Search t = log(N - N_min): uniform in log N far above the floor, dense close to it.
  to_params = lambda t: n_min + np.exp(t)
  grid = np.linspace(math.log(low - n_min), math.log(high - n_min), _GRID_POINTS)
  totals = _costs(law, target_loss, demand, cost, to_params(grid))[3]
  i = int(np.argmin(totals))
  best_t, best_total = float(grid[i]), float(totals[i])
  bracket = (float(grid[max(i - 1, 0)]), float(grid[min(i + 1, len(grid) - 1)]))
  if bracket[0] < bracket[1]:
    objective = lambda t: float(_costs(law, target_loss, demand, cost, to_params(t))[3])
    refined = optimize.minimize_scalar(
      objective, bounds=bracket, method="bounded", options={"xatol": 1e-10}
    )
    if refined.fun < best_total:
      best_t = float(refined.x)
  params = float(min(max(to_params(best_t), low), high))
  best = cost_at(law, target_loss, demand, cost, params)
  edge = grid[1] - grid[0]
  best["at_range_edge"] = bool(best_t - grid[0] < edge / 2 or grid[-1] - best_t < edge / 2)
  return best


def chinchilla_for_loss(
  law: Law,
  target_loss: float,
  cost: CostModel,
  n_range: tuple[float, float] | None = None,
  candidates: Sequence[float] | None = None,
) -> dict:
  """The training-only optimum for the target (with FLOPs, Chinchilla's compute optimum)."""
  return optimum(law, target_loss, 0.0, cost, n_range=n_range, candidates=candidates)


def demand_curve(
  law: Law,
  target_loss: float,
  demands: Sequence[float],
  cost: CostModel,
  n_range: tuple[float, float] | None = None,
  candidates: Sequence[float] | None = None,
) -> list[dict]:
  """Per demand: the optimum, the Chinchilla-optimal model costed at that demand, the saving.

  `saving` = 1 - optimum's total / Chinchilla's total: the share of the Chinchilla model's cost
  that choosing for the demand saves.
  """
  demands = list(demands)
  if not demands:
    raise ScalingError("demands is empty: give at least one demand in tokens")
  chinchilla = chinchilla_for_loss(law, target_loss, cost, n_range=n_range, candidates=candidates)
  curve = []
  for demand in demands:
    best = optimum(law, target_loss, demand, cost, n_range=n_range, candidates=candidates)
    baseline = cost_at(law, target_loss, demand, cost, chinchilla["params"])
    baseline["at_range_edge"] = chinchilla["at_range_edge"]
    saving = 1.0 - best["total_cost"] / baseline["total_cost"] if baseline["total_cost"] else 0.0
    curve.append(
      {
        "demand_tokens": float(demand),
        "optimum": best,
        "chinchilla": baseline,
        "saving": saving,
      }
    )
  return curve


def findings(curve: list[dict]) -> dict:
  """Sardana's qualitative findings on a demand curve, each a boolean with its numbers.

  - optimal_params_fall: the optimal N is non-increasing in demand;
  - tokens_per_param_rise: tokens per parameter are non-decreasing in demand;
  - reduces_to_chinchilla: at the smallest demand the optimal N is the Chinchilla-optimal N
    within 1% (meaningful when that demand is far below the training tokens: see
    smallest_demand_over_train_tokens);
  - saving_nonnegative: the optimum never costs more than the Chinchilla model.
  """
  if not curve:
    raise ScalingError("findings needs a demand curve with at least one point")
  points = sorted(curve, key=lambda p: p["demand_tokens"])
  demands = [p["demand_tokens"] for p in points]
  params = np.array([p["optimum"]["params"] for p in points])
  per_param = np.array([p["optimum"]["tokens_per_param"] for p in points])
  savings = [p["saving"] for p in points]
  first, chinchilla = points[0]["optimum"], points[0]["chinchilla"]
  params_gap = abs(first["params"] / chinchilla["params"] - 1.0)
  return {
    "demands": demands,
    "optimal_params": params.tolist(),
    "tokens_per_param": per_param.tolist(),
    "savings": savings,
    "optimal_params_fall": bool(np.all(np.diff(params) <= _MONOTONE_SLACK * params[:-1])),
    "tokens_per_param_rise": bool(np.all(np.diff(per_param) >= -_MONOTONE_SLACK * per_param[:-1])),
    "reduces_to_chinchilla": bool(params_gap <= 0.01),
    "smallest_demand_params_gap": params_gap,
    "smallest_demand_over_train_tokens": demands[0] / chinchilla["train_tokens"],
    "chinchilla_params": chinchilla["params"],
    "chinchilla_tokens_per_param": chinchilla["tokens_per_param"],
    "saving_nonnegative": bool(min(savings) >= -_MONOTONE_SLACK),
  }
