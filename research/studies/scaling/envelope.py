"""Chinchilla approach 1 (Hoffmann et al. 2022): the envelope of the learning curves.

At each compute C = 6 N D, the lowest loss any run reaches, and the N and D of that run; N_opt and
D_opt against C are then straight lines in log-log. Kept apart from approach 3 (fit.py), whose
bootstrap checks and percentile intervals it shares.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from research.studies.scaling import ScalingError
from research.studies.scaling.fit import check_bootstrap, percentile_ci


def _curves(curves) -> list[tuple[float, np.ndarray, np.ndarray]]:
  """(params, log tokens, loss) per curve; evaluations at 0 tokens (before training) dropped."""
  if not curves:
    raise ScalingError("no learning curves given; pass one dict per run with params, tokens, loss")
  out = []
  for i, curve in enumerate(curves):
    try:
      params = float(curve["params"])
      tokens = np.asarray(curve["tokens"], float).ravel()
      loss = np.asarray(curve["loss"], float).ravel()
    except (KeyError, TypeError) as err:
      raise ScalingError(
        f"curve {i} lacks {err}; each curve is a dict with params, tokens and loss"
      ) from None
    if not (math.isfinite(params) and params > 0):
      raise ScalingError(f"curve {i} has params {params!r}; give its positive parameter count")
    if tokens.size != loss.size:
      raise ScalingError(
        f"curve {i} has {tokens.size} token counts and {loss.size} losses; give one of each "
        "per evaluation"
      )
    seen = tokens != 0
    tokens, loss = tokens[seen], loss[seen]
    if tokens.size < 2:
      raise ScalingError(
        f"curve {i} has {tokens.size} evaluations after step 0; evaluate each run at least twice"
      )
    if not (np.all(np.isfinite(tokens)) and np.all(tokens > 0) and np.all(np.diff(tokens) > 0)):
      raise ScalingError(
        f"curve {i}'s tokens are not positive, finite and increasing; give tokens seen at each "
        "evaluation in order"
      )
    if not (np.all(np.isfinite(loss)) and np.all(loss > 0)):
      raise ScalingError(
        f"curve {i} has a non-finite or non-positive loss; drop runs that diverged"
      )
    out.append((params, np.log(tokens), loss))
  if len({c[0] for c in out}) < 2:
    raise ScalingError("all curves share one model size; the envelope needs at least 2 sizes")
  return out


def _envelope(curves, flops_per_token_per_param, points, flops_range, interior_only) -> dict:
  log_f = math.log(flops_per_token_per_param)
  log_params = np.array([math.log(c[0]) for c in curves])
  lo = min(log_f + lp + c[1][0] for lp, c in zip(log_params, curves))
  hi = max(log_f + lp + c[1][-1] for lp, c in zip(log_params, curves))
  if flops_range is not None:
    lo, hi = max(lo, math.log(flops_range[0])), min(hi, math.log(flops_range[1]))
    if not lo < hi:
      raise ScalingError(
        f"flops_range {flops_range!r} misses the compute the curves cover; widen or drop it"
      )
  log_c = np.linspace(lo, hi, points)
  losses = np.full((len(curves), points), np.inf)
  for i, (lp, (_, log_tokens, loss)) in enumerate(zip(log_params, curves)):
    at = log_c - log_f - lp  # log tokens of this run at each C
    inside = (at >= log_tokens[0]) & (at <= log_tokens[-1])
    losses[i, inside] = np.interp(at[inside], log_tokens, loss)
  covered = np.isfinite(losses).any(axis=0)
  winner = np.argmin(losses, axis=0)[covered]
  log_c = log_c[covered]
  best_loss = losses[winner, np.flatnonzero(covered)]
  log_n = log_params[winner]
  sizes = np.unique(log_params)
  edge = (log_n == sizes[0]) | (log_n == sizes[-1])
  used = ~edge if interior_only else np.ones(log_n.size, bool)
  if np.unique(log_n[used]).size < 2:
    raise ScalingError(
      "one model size wins the envelope at every compute; add sizes around the compute optimum "
      "(or set interior_only=False)"
    )
  log_d = log_c[used] - log_f - log_n[used]
  a, n_const = np.polyfit(log_c[used], log_n[used], 1)
  b, d_const = np.polyfit(log_c[used], log_d, 1)
  c_lo, c_hi = float(np.exp(log_c[used][0])), float(np.exp(log_c[used][-1]))
  fit = {"a": float(a), "b": float(b), "n_const": float(n_const), "d_const": float(d_const)}
  params = np.array([c[0] for c in curves])[winner]  # the runs' own counts, not exp(log(N))
  flops = np.exp(log_c)
  points_out = [
    {
      "flops": float(c),
      "params": float(p),
      "tokens": float(c / (flops_per_token_per_param * p)),
      "loss": float(bl),
      "edge": bool(e),
    }
    for c, p, bl, e in zip(flops, params, best_loss, edge)
  ]
  return {
    "points": points_out,
    **fit,
    "flops_range": (c_lo, c_hi),
    "tokens_per_param_min_flops": float(envelope_tokens_per_param(fit, c_lo)),
    "tokens_per_param_max_flops": float(envelope_tokens_per_param(fit, c_hi)),
  }


def envelope_tokens_per_param(fit: dict, flops) -> np.ndarray:
  """D_opt / N_opt at compute C from an envelope's fitted lines (a, b, n_const, d_const)."""
  log_c = np.log(np.asarray(flops, float))
  return np.exp((fit["b"] - fit["a"]) * log_c + fit["d_const"] - fit["n_const"])


def envelope(
  curves: Sequence[dict],
  flops_per_token_per_param: float = 6.0,
  points: int = 1500,
  flops_range: tuple[float, float] | None = None,
  interior_only: bool = False,
) -> dict:
  """Chinchilla approach 1: N_opt = exp(n_const) C**a and D_opt = exp(d_const) C**b.

  curves: one dict per run, {"params": N, "tokens": tokens seen at each evaluation, "loss": the
  evaluation losses}. At `points` log-spaced C over the compute the curves cover (or flops_range),
  the lowest loss any run reaches (each curve interpolated in log tokens, only within its own
  range) picks that C's N and D. A point won by the smallest or largest size is marked `edge`
  (the optimum may lie outside the grid); interior_only fits without those points.
  The tokens per parameter at another C: envelope_tokens_per_param(result, C).
  """
  if not (math.isfinite(flops_per_token_per_param) and flops_per_token_per_param > 0):
    raise ScalingError(
      f"flops_per_token_per_param={flops_per_token_per_param!r}; give a positive number (6)"
    )
  if int(points) < 3:
    raise ScalingError(f"points={points!r}; give at least 3 compute values (the paper uses 1500)")
  parsed = _curves(curves)
  return _envelope(parsed, flops_per_token_per_param, int(points), flops_range, interior_only)


def bootstrap_envelope(
  curves: Sequence[dict],
  samples: int = 200,
  seed: int = 0,
  level: float = 0.9,
  **envelope_args,
) -> dict:
  """Percentile intervals on the envelope's exponents a and b (and tokens per parameter at the
  largest compute the full envelope reaches), resampling runs. Deterministic for a seed."""
  check_bootstrap(samples, level)
  full = envelope(curves, **envelope_args)
  parsed = _curves(curves)
  flops_per_token_per_param = envelope_args.get("flops_per_token_per_param", 6.0)
  points = int(envelope_args.get("points", 1500))
  flops_range = envelope_args.get("flops_range")
  interior_only = envelope_args.get("interior_only", False)
  sizes = np.array([c[0] for c in parsed])
  c_max = full["flops_range"][1]
  rng = np.random.default_rng(seed)
  table: dict[str, list[float]] = {"a": [], "b": [], "tokens_per_param_max_flops": []}
  skipped = 0
  while len(table["a"]) < samples:
    if skipped > 20 * samples + 100:
      raise ScalingError(
        "most bootstrap resamples cannot form an envelope; add runs or sizes to the grid"
      )
    index = rng.integers(0, len(parsed), len(parsed))
    if np.unique(sizes[index]).size < 2:
      skipped += 1
      continue
    try:
      fit = _envelope(
        [parsed[i] for i in index], flops_per_token_per_param, points, flops_range, interior_only
      )
    except ScalingError:
      skipped += 1
      continue
    table["a"].append(fit["a"])
    table["b"].append(fit["b"])
    table["tokens_per_param_max_flops"].append(float(envelope_tokens_per_param(fit, c_max)))
  ci = {name: percentile_ci(np.array(values), level) for name, values in table.items()}
  return {"envelope": full, "ci": ci, "samples": int(samples), "level": level, "skipped": skipped}
