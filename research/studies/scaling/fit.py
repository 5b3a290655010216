"""Fitting the loss law to a grid of runs: Chinchilla approach 3, with bootstrap intervals.

Approach 3 (Hoffmann et al. 2022, appendix D.2) fits L(N, D) = E + A/N**alpha + B/D**beta by
minimising the Huber loss of log L, written as a log-sum-exp of (a - alpha log N, b - beta log D,
e), from a grid of starting points, keeping the best. The grid has 5,400 starts; scipy's L-BFGS-B
takes seconds per hundred of them, so every start is first run by a vectorised L-BFGS (all starts
at once, each with its own history and line search), and the best few end points are finished
with scipy's L-BFGS-B. The bootstrap refits each resample the same way from starts near the full
fit's optimum, all resamples in one batch. Approach 1 (the envelope of the learning curves) is
in envelope.py and shares the bootstrap's checks and intervals from here.

Parameters travel as theta = (a, b, e, alpha, beta), with A = exp(a), B = exp(b), E = exp(e).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import minimize

from research.studies.scaling import ScalingError
from research.studies.scaling.law import Law
from research.studies.scaling.lbfgs import lbfgs_batch

MIN_RUNS = 4  # the toy grid (2 sizes x 2 budgets) must fit end to end; fewer than 6 is flagged
PARAMS = ("E", "A", "B", "alpha", "beta")

# The paper's grid of starts (appendix D.2): alpha, beta in 0..2 by 0.5, e in -1..1.5 by 0.5,
# a, b in 0..25 by 5.
_PAPER_A = np.arange(0.0, 25.1, 5.0)
_PAPER_E = np.arange(-1.0, 1.51, 0.5)
_PAPER_EXPONENT = np.arange(0.0, 2.01, 0.5)


def paper_starts() -> np.ndarray:
  """The 5,400 starting points of Hoffmann et al. (2022), rows of (a, b, e, alpha, beta)."""
  rows = itertools.product(_PAPER_A, _PAPER_A, _PAPER_E, _PAPER_EXPONENT, _PAPER_EXPONENT)
  return np.array(list(rows), float)


def law_from_theta(theta: Sequence[float]) -> Law:
  a, b, e, alpha, beta = (float(x) for x in theta)
  with np.errstate(over="ignore"):  # a runaway fit gives inf, not OverflowError
    E, A, B = (float(np.exp(x)) for x in (e, a, b))
  return Law(E=E, A=A, B=B, alpha=alpha, beta=beta)


def _tokens_per_param(thetas: np.ndarray, flops: float) -> np.ndarray:
  """Law.tokens_per_param_at for rows of theta, vectorised; nan where a resample's law has no
  compute optimum (an exponent at or below zero), rather than ZeroDivisionError."""
  a, b, _, alpha, beta = thetas.T
  with np.errstate(all="ignore"):
    log_g = (np.log(alpha / beta) + a - b) / (alpha + beta)
    log_n = log_g + beta / (alpha + beta) * np.log(flops / 6.0)
    tokens_per_param = np.exp(np.log(flops / 6.0) - 2.0 * log_n)
  return np.where((alpha > 0) & (beta > 0), tokens_per_param, np.nan)


def theta_from_law(law: Law) -> np.ndarray:
  return np.array([math.log(law.A), math.log(law.B), math.log(law.E), law.alpha, law.beta])


# ---------------------------------------------------------------------------------------------
# Input checks


def _runs(n, d, loss) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The three columns as float arrays, refused (with the fix) where no law can be fitted."""
  n, d, loss = (np.asarray(x, float).ravel() for x in (n, d, loss))
  if not n.size == d.size == loss.size:
    raise ScalingError(
      f"params, tokens and loss have {n.size}, {d.size} and {loss.size} entries; "
      "give one of each per run"
    )
  for name, column in (("params", n), ("tokens", d), ("loss", loss)):
    bad = ~(np.isfinite(column) & (column > 0))
    if bad.any():
      first = int(np.flatnonzero(bad)[0])
      raise ScalingError(
        f"{name} of run {first} is {float(column[first])!r}; every run needs positive finite "
        "params, tokens and loss (drop runs that diverged or did not finish)"
      )
  if n.size < MIN_RUNS:
    raise ScalingError(
      f"{n.size} runs cannot fit the law's 5 parameters; give at least {MIN_RUNS} runs (a grid "
      "of sizes and token budgets)"
    )
  for name, column in (("model sizes", n), ("token budgets", d)):
    if np.unique(column).size < 2:
      raise ScalingError(
        f"all runs share one of the {name}; the law needs at least 2 distinct {name}"
      )
  return n, d, loss


def _check_delta(delta: float) -> float:
  if not (math.isfinite(delta) and delta > 0):
    raise ScalingError(f"Huber delta {delta!r} must be positive (the paper uses 1e-3)")
  return float(delta)


# ---------------------------------------------------------------------------------------------
# Approach 3: the objective and its gradient, for many problems at once


def _objective(theta, log_n, log_d, log_loss, delta):
  """Huber(LSE - log L) / delta summed over runs, and its gradient, for rows of theta.

  theta is (K, 5); the data are (K, M) or (1, M). Dividing by delta leaves the minimiser alone and
  keeps gradients of order one, which suits the optimisers' tolerances.
  """
  a, b, e, alpha, beta = (theta[:, i : i + 1] for i in range(5))
  x1 = a - alpha * log_n
  x2 = b - beta * log_d
  top = np.maximum(np.maximum(x1, x2), e)
  w1, w2, w3 = np.exp(x1 - top), np.exp(x2 - top), np.exp(e - top)
  total = w1 + w2 + w3
  r = top + np.log(total) - log_loss
  clipped = np.clip(r, -delta, delta)
  huber_over_delta = clipped * (r - 0.5 * clipped) / delta  # r*r/2 inside delta, linear outside
  slope = clipped / (delta * total)  # d(huber / delta)/dr, over the softmax's sum
  g1, g2 = slope * w1, slope * w2
  grad = np.stack(
    [
      g1.sum(1),
      g2.sum(1),
      (slope * w3).sum(1),
      -(g1 * log_n).sum(1),
      -(g2 * log_d).sum(1),
    ],
    axis=1,
  )
  return huber_over_delta.sum(1), grad


def _polish(theta0, log_n, log_d, log_loss, delta) -> tuple[np.ndarray, float]:
  """scipy's L-BFGS-B (no bounds) from theta0 on one problem."""
  data = (log_n[None], log_d[None], log_loss[None], delta)

  def fun(theta):
    f, g = _objective(theta[None], *data)
    return float(f[0]), g[0]

  result = minimize(
    fun,
    np.asarray(theta0, float),
    jac=True,
    method="L-BFGS-B",
    options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-10},
  )
  return result.x, float(result.fun)


def _fit_theta(n, d, loss, delta, starts, polish=3) -> tuple[np.ndarray, float]:
  """Best theta from all starts (batched L-BFGS), its `polish` best ends finished by scipy."""
  log_n, log_d, log_loss = np.log(n), np.log(d), np.log(loss)
  data = (log_n[None], log_d[None], log_loss[None], delta)
  ends, values = lbfgs_batch(lambda theta, rows: _objective(theta, *data), starts)
  order = np.argsort(values)
  best_theta, best_value = ends[order[0]], float(values[order[0]])
  picked: list[np.ndarray] = []
  for i in order:
    if len(picked) == polish or not np.isfinite(values[i]):
      break
    if any(np.allclose(ends[i], p, rtol=1e-4, atol=1e-4) for p in picked):
      continue  # the same optimum from another start
    picked.append(ends[i])
  for theta0 in picked:
    theta, value = _polish(theta0, log_n, log_d, log_loss, delta)
    if value < best_value:
      best_theta, best_value = theta, value
  return best_theta, best_value * delta


def _starts(starts) -> np.ndarray:
  if starts is None:
    return paper_starts()
  starts = np.atleast_2d(np.asarray(starts, float))
  if starts.ndim != 2 or starts.shape[1] != 5 or not np.all(np.isfinite(starts)):
    raise ScalingError(
      "starts must be finite rows of (a, b, e, alpha, beta); leave starts=None for the paper's grid"
    )
  return starts


def fit_parametric(n, d, loss, delta: float = 1e-3, starts=None, min_params: float = 0.0) -> Law:
  """Chinchilla approach 3: L(N, D) = E + A/N**alpha + B/D**beta by Huber loss on log L.

  n: non-embedding parameters, d: training tokens, loss: validation loss, one entry per run.
  starts: rows of (a, b, e, alpha, beta); None is the paper's grid. min_params: leave out runs
  with fewer parameters, to see whether small models bend the law.
  """
  n, d, loss = _runs(n, d, loss)
  delta = _check_delta(delta)
  if min_params > 0:
    kept = n >= min_params
    if kept.sum() < MIN_RUNS or np.unique(n[kept]).size < 2 or np.unique(d[kept]).size < 2:
      raise ScalingError(
        f"only {int(kept.sum())} runs have at least {min_params:g} params; lower min_params so "
        "that at least {MIN_RUNS} runs over 2 sizes and 2 token budgets remain"
      )
    n, d, loss = n[kept], d[kept], loss[kept]
  theta, _ = _fit_theta(n, d, loss, delta, _starts(starts))
  return law_from_theta(theta)


def fit_above(n, d, loss, min_params: float, delta: float = 1e-3, starts=None) -> Law:
  """fit_parametric on the runs with at least min_params parameters."""
  return fit_parametric(n, d, loss, delta=delta, starts=starts, min_params=min_params)


def _near_starts(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
  """theta and a few starts around it: each exponent moved by 0.1 with its coefficient moved so
  that the term is unchanged at the grid's middle size (or budget), and E moved by a third."""
  mid_n, mid_d = float(np.mean(log_n)), float(np.mean(log_d))
  moves = [np.zeros(5)]
  for sign in (1.0, -1.0):
    moves.append(np.array([0.1 * sign * mid_n, 0, 0, 0.1 * sign, 0]))
    moves.append(np.array([0, 0.1 * sign * mid_d, 0, 0, 0.1 * sign]))
  moves.append(np.array([0, 0, -0.4, 0, 0]))
  return theta[None] + np.array(moves)


def percentile_ci(values: np.ndarray, level: float) -> tuple[float, float]:
  """The central `level` interval of the finite values; (nan, nan) if every resample failed."""
  tail = 50.0 * (1.0 - level)
  finite = values[np.isfinite(values)]
  if finite.size == 0:
    return (math.nan, math.nan)
  lo, hi = np.percentile(finite, [tail, 100.0 - tail])
  return (float(lo), float(hi))


def check_bootstrap(samples: int, level: float) -> None:
  """Refuse a bootstrap that cannot give an interval (shared by both approaches' bootstraps)."""
  if not (isinstance(samples, (int, np.integer)) and samples >= 2):
    raise ScalingError(f"samples={samples!r}; the bootstrap needs an integer of at least 2 (200)")
  if not (0.0 < level < 1.0):
    raise ScalingError(f"level={level!r}; give the interval's coverage in (0, 1), such as 0.9")


def _resamples(rng, size: int, samples: int, valid: Callable[[np.ndarray], bool]) -> np.ndarray:
  """`samples` index draws with replacement, redrawing any that cannot be fitted."""
  draws = []
  tries = 0
  while len(draws) < samples:
    tries += 1
    if tries > 20 * samples + 100:
      raise ScalingError(
        "most bootstrap resamples hold too few distinct runs to fit; add runs to the grid"
      )
    index = rng.integers(0, size, size)
    if valid(index):
      draws.append(index)
  return np.array(draws)


def bootstrap_parametric(
  n,
  d,
  loss,
  samples: int = 200,
  seed: int = 0,
  level: float = 0.9,
  delta: float = 1e-3,
  starts=None,
) -> dict:
  """Percentile intervals on E, A, B, alpha, beta and tokens per parameter, resampling runs.

  The full fit starts from `starts` (None: the paper's grid); each resample starts from its
  optimum and a few points near it. tokens_per_param_at_grid_compute is the compute optimum's
  D/N at the grid's largest training compute (6 N D of its biggest run), given as grid_flops.
  Deterministic for a seed.
  """
  n, d, loss = _runs(n, d, loss)
  delta = _check_delta(delta)
  check_bootstrap(samples, level)
  theta, _ = _fit_theta(n, d, loss, delta, _starts(starts))
  law = law_from_theta(theta)
  grid_flops = float(6.0 * np.max(n * d))
  log_n, log_d, log_loss = np.log(n), np.log(d), np.log(loss)

  def valid(index):
    distinct_runs = np.unique(index).size >= min(5, n.size)
    return distinct_runs and np.unique(n[index]).size >= 2 and np.unique(d[index]).size >= 2

  draws = _resamples(np.random.default_rng(seed), n.size, samples, valid)
  starts = _near_starts(theta, log_n, log_d)
  per = len(starts)
  # One batch: row i*per + j is resample i from start j.
  rows_data = np.repeat(draws, per, axis=0)
  data_n, data_d, data_l = log_n[rows_data], log_d[rows_data], log_loss[rows_data]

  def fun(theta_rows, rows):
    return _objective(theta_rows, data_n[rows], data_d[rows], data_l[rows], delta)

  ends, values = lbfgs_batch(fun, np.tile(starts, (samples, 1)))
  thetas = np.empty((samples, 5))
  for i, index in enumerate(draws):
    block = values[i * per : (i + 1) * per]
    best = ends[i * per + int(np.argmin(block))]
    thetas[i], _ = _polish(best, log_n[index], log_d[index], log_loss[index], delta)
  table = {
    "E": np.exp(thetas[:, 2]),
    "A": np.exp(thetas[:, 0]),
    "B": np.exp(thetas[:, 1]),
    "alpha": thetas[:, 3],
    "beta": thetas[:, 4],
  }
  table["tokens_per_param_at_grid_compute"] = _tokens_per_param(thetas, grid_flops)
  ci = {name: percentile_ci(values, level) for name, values in table.items()}
  return {
    "law": law,
    "ci": ci,
    "samples": int(samples),
    "level": level,
    "grid_flops": grid_flops,
    "underdetermined": bool(n.size < 6),  # 5 parameters: a toy grid fits, but loosely
    "sample_laws": [law_from_theta(t).as_dict() for t in thetas],
  }


def residuals_by_size(n, d, loss, law: Law) -> list[dict]:
  """Per distinct N, how far the runs sit from the law: (observed - predicted) / predicted.

  mean_rel_residual is signed (a size the law over- or under-predicts throughout shows as a
  bias); max_abs_rel_residual is the worst run of that size.
  """
  n, d, loss = _runs(n, d, loss)
  relative = (loss - law.loss(n, d)) / law.loss(n, d)
  rows = []
  for size in np.unique(n):
    mine = relative[n == size]
    rows.append(
      {
        "params": float(size),
        "runs": int(mine.size),
        "mean_rel_residual": float(np.mean(mine)),
        "max_abs_rel_residual": float(np.max(np.abs(mine))),
      }
    )
  return rows


def compute_optimal_summary(law: Law, flops) -> dict:
  """N_opt, D_opt, tokens per parameter and loss at the compute optimum for C = 6 N D FLOPs."""
  flops_array = np.asarray(flops, float)
  if not np.all(np.isfinite(flops_array) & (flops_array > 0)):
    raise ScalingError(f"flops {flops!r} must be positive and finite (training FLOPs, 6 N D)")
  n_opt, d_opt = law.compute_optimal(flops_array)
  out = {
    "flops": flops_array,
    "N_opt": n_opt,
    "D_opt": d_opt,
    "tokens_per_param": d_opt / n_opt,
    "loss": law.loss(n_opt, d_opt),
  }
  if flops_array.ndim == 0:
    return {key: float(value) for key, value in out.items()}
  return {key: np.asarray(value, float).tolist() for key, value in out.items()}
