"""The inference-aware optimum (Sardana et al. 2024) on the published Chinchilla law."""

import math

import numpy as np
import pytest
from scipy import optimize

from research.studies.scaling import ScalingError
from research.studies.scaling import plan as P
from research.studies.scaling.law import CHINCHILLA, EPOCH_AI

FLOPS = P.flops_cost()


def _chinchilla_flops_for_params(law, params):
  """The training FLOPs whose compute optimum has `params` parameters (inverting eq. 4)."""
  a, b = law.alpha, law.beta
  g = (a * law.A / (b * law.B)) ** (1.0 / (a + b))
  return 6.0 * (params / g) ** ((a + b) / b)


def _loss_of_chinchilla_model(law, params):
  n, d = law.compute_optimal(_chinchilla_flops_for_params(law, params))
  return float(law.loss(n, d))


TARGET_13B = _loss_of_chinchilla_model(CHINCHILLA, 13e9)


def test_sardana_figure_1_direction():
  """A 13B-Chinchilla-quality model serving 2T tokens: smaller, trained longer, cheaper."""
  chinchilla = P.chinchilla_for_loss(CHINCHILLA, TARGET_13B, FLOPS)
  assert chinchilla["params"] == pytest.approx(13e9, rel=1e-6)
  (point,) = P.demand_curve(CHINCHILLA, TARGET_13B, [2e12], FLOPS)
  best = point["optimum"]
  assert best["params"] < 0.9 * chinchilla["params"]
  assert best["train_tokens"] > 1.1 * chinchilla["train_tokens"]
  assert best["tokens_per_param"] > chinchilla["tokens_per_param"]
  assert 0.0 < point["saving"] < 0.5
  # The optimum reaches the target, and its cost adds up.
  assert float(CHINCHILLA.loss(best["params"], best["train_tokens"])) == pytest.approx(TARGET_13B)
  assert best["train_cost"] == pytest.approx(6 * best["params"] * best["train_tokens"])
  assert best["serve_cost"] == pytest.approx(2 * best["params"] * 2e12)
  assert best["total_cost"] == pytest.approx(best["train_cost"] + best["serve_cost"])
  assert point["chinchilla"]["total_cost"] > best["total_cost"]
  assert not best["at_range_edge"]


@pytest.mark.parametrize("law", [CHINCHILLA, EPOCH_AI], ids=["chinchilla", "epoch"])
@pytest.mark.parametrize("flops", [1e18, 1e21, 1e24])
def test_demand_zero_is_chinchillas_compute_optimum(law, flops):
  """Least FLOPs for a loss is the dual of least loss for the FLOPs: the same (N, D)."""
  n_star, d_star = law.compute_optimal(flops)
  target = float(law.loss(n_star, d_star))
  best = P.optimum(law, target, 0.0, FLOPS)
  assert best["params"] == pytest.approx(float(n_star), rel=1e-5)
  assert best["train_tokens"] == pytest.approx(float(d_star), rel=1e-5)
  assert best["train_cost"] == pytest.approx(flops, rel=1e-9)
  assert best["serve_cost"] == 0.0


def test_demand_zero_found_by_root_of_compute_optimal():
  """The brief's route: find C whose compute-optimal loss is the target, compare the N."""
  target = 2.3
  log_c = optimize.brentq(
    lambda lc: float(CHINCHILLA.loss(*CHINCHILLA.compute_optimal(math.exp(lc)))) - target,
    math.log(1e10),
    math.log(1e30),
    xtol=1e-14,
  )
  n_star, _ = CHINCHILLA.compute_optimal(math.exp(log_c))
  assert P.chinchilla_for_loss(CHINCHILLA, target, FLOPS)["params"] == pytest.approx(
    float(n_star), rel=1e-5
  )


def test_demand_curve_findings_hold_on_chinchilla():
  demands = np.geomspace(1e9, 1e15, 13)
  curve = P.demand_curve(CHINCHILLA, TARGET_13B, demands, FLOPS)
  found = P.findings(curve)
  assert found["optimal_params_fall"] and found["tokens_per_param_rise"]
  assert found["reduces_to_chinchilla"] and found["smallest_demand_params_gap"] < 0.01
  assert found["smallest_demand_over_train_tokens"] < 0.01
  assert found["saving_nonnegative"]
  # Strictly, not just non-increasing: the high-demand model is much smaller and trains far longer.
  assert found["optimal_params"][-1] < 0.5 * found["optimal_params"][0]
  assert found["tokens_per_param"][-1] > 100 * found["tokens_per_param"][0]
  assert np.all(np.diff(found["savings"]) > 0)


def test_findings_flag_a_curve_that_breaks_the_pattern():
  curve = P.demand_curve(CHINCHILLA, TARGET_13B, [1e9, 1e13], FLOPS)
  curve[1]["optimum"] = dict(curve[1]["optimum"], params=2e10)  # a bigger N at more demand
  curve[0]["optimum"] = dict(curve[0]["optimum"], params=1e10)  # 23% off Chinchilla's N
  found = P.findings(curve)
  assert not found["optimal_params_fall"]
  assert not found["reduces_to_chinchilla"]


def test_a_cost_proportional_to_n_gives_the_flops_answer():
  """Measured costs exactly proportional to N (any constant) move nothing: the same optimum."""
  sizes = [1e6, 1e7, 1e8]
  seconds = P.measured_cost(
    "seconds", sizes, [6e-12 * n for n in sizes], [2e-12 * n for n in sizes]
  )
  dollars = P.scaled(seconds, 3.0 / 3600, "dollars", "$")
  for demand in [0.0, 2e12]:
    reference = P.optimum(CHINCHILLA, TARGET_13B, demand, FLOPS)
    for cost in [seconds, dollars]:
      best = P.optimum(CHINCHILLA, TARGET_13B, demand, cost)
      assert best["params"] == pytest.approx(reference["params"], rel=1e-5)
      assert best["extrapolated"]  # 13B is far outside the measured sizes
  assert P.optimum(CHINCHILLA, TARGET_13B, 2e12, dollars)["unit"] == "$"
  best_s = P.optimum(CHINCHILLA, TARGET_13B, 2e12, seconds)
  best_d = P.optimum(CHINCHILLA, TARGET_13B, 2e12, dollars)
  assert best_d["total_cost"] == pytest.approx(best_s["total_cost"] * 3.0 / 3600)


def test_measured_cost_interpolates_log_log():
  sizes, train, serve = [4e6, 1e6, 16e6], [3.0, 1.0, 5.0], [0.5, 0.25, 2.0]  # unsorted on purpose
  cost = P.measured_cost("m", sizes, train, serve)
  assert cost.measured_params == (1e6, 4e6, 16e6)
  np.testing.assert_allclose(cost.train_per_token(np.array(sizes)), train, rtol=1e-12)
  np.testing.assert_allclose(cost.serve_per_token(np.array(sizes)), serve, rtol=1e-12)
  # Midway in log N is the geometric mean of the neighbours' costs.
  assert cost.train_per_token(2e6) == pytest.approx(math.sqrt(1.0 * 3.0))
  assert cost.serve_per_token(8e6) == pytest.approx(math.sqrt(0.5 * 2.0))
  # Outside, the end segments' slopes: train slope log3/log4 below, log(5/3)/log4 above.
  slope_low, slope_high = math.log(3) / math.log(4), math.log(5 / 3) / math.log(4)
  assert cost.train_per_token(1e5) == pytest.approx(10 ** (-slope_low))
  assert cost.train_per_token(64e6) == pytest.approx(5.0 * 4**slope_high)
  assert cost.serve_per_token(np.array([1e5, 1e9])).shape == (2,)


def test_candidates_restrict_the_answer():
  n_min = CHINCHILLA.smallest_params_for_loss(TARGET_13B)
  candidates = [0.5 * n_min, 2e9, 7e9, 13e9, 30e9, 70e9]
  for demand in [0.0, 2e12, 1e14]:
    best = P.optimum(CHINCHILLA, TARGET_13B, demand, FLOPS, candidates=candidates)
    assert best["params"] in candidates
    reachable = [n for n in candidates if n > n_min]
    totals = [P.cost_at(CHINCHILLA, TARGET_13B, demand, FLOPS, n)["total_cost"] for n in reachable]
    assert best["params"] == reachable[int(np.argmin(totals))]
  assert (
    P.chinchilla_for_loss(CHINCHILLA, TARGET_13B, FLOPS, candidates=candidates)["params"] == 13e9
  )
  assert P.optimum(CHINCHILLA, TARGET_13B, 2e12, FLOPS, candidates=candidates)["params"] == 7e9
  curve = P.demand_curve(CHINCHILLA, TARGET_13B, [2e12], FLOPS, candidates=candidates)
  assert curve[0]["chinchilla"]["params"] == 13e9 and curve[0]["saving"] > 0


def test_n_range_bounds_the_search():
  best = P.optimum(CHINCHILLA, TARGET_13B, 0.0, FLOPS, n_range=(1e9, 5e9))
  assert best["params"] == pytest.approx(5e9) and best["at_range_edge"]
  free = P.optimum(CHINCHILLA, TARGET_13B, 0.0, FLOPS, n_range=(1e9, 1e11))
  assert free["params"] == pytest.approx(13e9, rel=1e-5) and not free["at_range_edge"]


@pytest.mark.parametrize(
  "call, match",
  [
    (lambda: P.optimum(CHINCHILLA, CHINCHILLA.E, 0.0, FLOPS), "irreducible loss E = 1.69"),
    (lambda: P.optimum(CHINCHILLA, 1.5, 0.0, FLOPS), "above 1.69"),
    (lambda: P.optimum(CHINCHILLA, math.nan, 0.0, FLOPS), "finite"),
    (lambda: P.optimum(CHINCHILLA, 2.5, -1.0, FLOPS), "demand"),
    (lambda: P.optimum(CHINCHILLA, 2.5, math.inf, FLOPS), "demand"),
    (lambda: P.optimum(CHINCHILLA, 2.5, 0.0, FLOPS, n_range=(1e9, 1e8)), "low < high"),
    (lambda: P.optimum(CHINCHILLA, 2.5, 0.0, FLOPS, n_range=(1.0, 10.0)), "widen n_range"),
    (lambda: P.optimum(CHINCHILLA, 2.5, 0.0, FLOPS, candidates=[]), "empty"),
    (lambda: P.optimum(CHINCHILLA, 2.5, 0.0, FLOPS, candidates=[10.0, 100.0]), "no candidate"),
    (lambda: P.optimum(CHINCHILLA, 2.5, 0.0, FLOPS, candidates=[-1.0]), "positive"),
    (lambda: P.optimum(CHINCHILLA, 2.5, 0, FLOPS, n_range=(1, 2e9), candidates=[1e9]), "not both"),
    (lambda: P.cost_at(CHINCHILLA, 2.5, 0.0, FLOPS, 10.0), "cannot reach"),
    (lambda: P.measured_cost("m", [1e6], [1.0], [1.0]), "at least 2"),
    (lambda: P.measured_cost("m", [1e6, 1e6], [1.0, 2.0], [1.0, 2.0]), "repeat"),
    (lambda: P.measured_cost("m", [1e6, 2e6], [1.0, 0.0], [1.0, 2.0]), "positive"),
    (lambda: P.measured_cost("m", [1e6, 2e6], [1.0, 2.0], [math.nan, 2.0]), "finite"),
    (lambda: P.measured_cost("m", [1e6, 2e6], [1.0, 2.0], [1.0]), "one of each"),
    (lambda: P.scaled(FLOPS, 0.0, "x", "$"), "scale factor"),
    (lambda: P.demand_curve(CHINCHILLA, 2.5, [], FLOPS), "demands is empty"),
    (lambda: P.findings([]), "at least one"),
  ],
)
def test_bad_inputs_raise_scaling_error(call, match):
  with pytest.raises(ScalingError, match=match):
    call()
