"""Approach 3 recovers a known law from synthetic runs drawn from it (the fit and its bootstrap),
shows a size that breaks the law, and refuses bad input. Approach 1: test_scaling_envelope.py."""

import numpy as np
import pytest

from research.errors import UserError
from research.studies.scaling import ScalingError, fit
from research.studies.scaling.law import Law

TRUTH = Law(E=1.0, A=30.0, B=60.0, alpha=0.4, beta=0.3)
# Every 27th of the paper's starts: enough to find a noiseless optimum, a tenth of the time.
FEW_STARTS = fit.paper_starts()[::27]


def grid(sizes=6, budgets=5):
  n, d = np.meshgrid(np.geomspace(3e3, 5e5, sizes), np.geomspace(2e5, 2e7, budgets))
  return n.ravel(), d.ravel()


@pytest.fixture(scope="module")
def noisy_runs():
  n, d = grid()
  loss = TRUTH.loss(n, d) * np.exp(np.random.default_rng(0).normal(0.0, 0.005, n.size))
  return n, d, loss


@pytest.fixture(scope="module")
def boot(noisy_runs):
  # Six intervals must all hold at once: at 90 % each, one misses about every other data set.
  return fit.bootstrap_parametric(*noisy_runs, samples=100, seed=0, level=0.98)


def test_paper_starts_are_the_papers_grid():
  starts = fit.paper_starts()
  assert starts.shape == (6 * 6 * 6 * 5 * 5, 5)
  a, b, e, alpha, beta = starts.T
  assert sorted(set(a)) == sorted(set(b)) == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
  assert sorted(set(e)) == [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]
  assert sorted(set(alpha)) == sorted(set(beta)) == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_noiseless_runs_give_back_the_law():
  n, d = grid()
  law = fit.fit_parametric(n, d, TRUTH.loss(n, d), starts=FEW_STARTS)
  for name, value in TRUTH.as_dict().items():
    assert getattr(law, name) == pytest.approx(value, rel=1e-4), name


def test_noisy_runs_recover_exponents_and_irreducible_loss(boot):
  law = boot["law"]  # the full fit, from the paper's whole grid of starts
  assert abs(law.alpha - TRUTH.alpha) < 0.05
  assert abs(law.beta - TRUTH.beta) < 0.05
  assert law.E == pytest.approx(TRUTH.E, rel=0.05)


def test_bootstrap_intervals_contain_the_truth(boot, noisy_runs):
  n, d, _ = noisy_runs
  assert boot["samples"] == 100
  assert boot["grid_flops"] == pytest.approx(6 * 5e5 * 2e7)
  truth = dict(TRUTH.as_dict())
  truth["tokens_per_param_at_grid_compute"] = float(TRUTH.tokens_per_param_at(boot["grid_flops"]))
  for name, value in truth.items():
    lo, hi = boot["ci"][name]
    assert lo <= value <= hi, (name, lo, value, hi)
    assert lo < hi, name
  # The point estimate sits inside its own interval.
  alpha_lo, alpha_hi = boot["ci"]["alpha"]
  assert alpha_lo <= boot["law"].alpha <= alpha_hi


def test_bootstrap_is_deterministic_for_a_seed(noisy_runs):
  runs = lambda seed: fit.bootstrap_parametric(
    *noisy_runs, samples=10, seed=seed, starts=FEW_STARTS[::4]
  )["ci"]
  first, again, other = runs(3), runs(3), runs(4)
  assert first == again
  assert first != other


def test_leaving_out_small_models_shows_where_they_break_the_law():
  n, d = grid()
  loss = TRUTH.loss(n, d) * np.where(n < 1e4, 1.10, 1.0)  # the two smallest sizes 10 % worse
  above = fit.fit_parametric(n, d, loss, starts=FEW_STARTS, min_params=1e4)
  assert above.alpha == pytest.approx(TRUTH.alpha, abs=1e-3)
  assert above == fit.fit_above(n, d, loss, 1e4, starts=FEW_STARTS)
  rows = fit.residuals_by_size(n, d, loss, above)
  assert [row["params"] for row in rows] == sorted(set(n))
  assert all(row["runs"] == 5 for row in rows)
  for row in rows:
    expected = 0.10 if row["params"] < 1e4 else 0.0
    assert row["mean_rel_residual"] == pytest.approx(expected, abs=2e-3), row
    assert row["max_abs_rel_residual"] >= abs(row["mean_rel_residual"])
  # Fitted with the rest, the small sizes bend the exponent instead.
  everything = fit.fit_parametric(n, d, loss, starts=FEW_STARTS)
  assert abs(everything.alpha - TRUTH.alpha) > 0.05


def test_compute_optimal_summary_follows_the_law():
  one = fit.compute_optimal_summary(TRUTH, 1e15)
  assert 6 * one["N_opt"] * one["D_opt"] == pytest.approx(1e15)
  assert one["tokens_per_param"] == pytest.approx(float(TRUTH.tokens_per_param_at(1e15)))
  assert one["loss"] == pytest.approx(float(TRUTH.loss(one["N_opt"], one["D_opt"])))
  # The optimum beats a neighbour on the same compute.
  assert one["loss"] < float(TRUTH.loss(2 * one["N_opt"], one["D_opt"] / 2))
  many = fit.compute_optimal_summary(TRUTH, [1e13, 1e15])
  assert many["N_opt"][1] == pytest.approx(one["N_opt"])
  assert many["tokens_per_param"][0] < many["tokens_per_param"][1]  # beta < alpha: D grows faster


def _runs_with(**change):
  n, d = grid()
  runs = {"n": n.copy(), "d": d.copy(), "loss": TRUTH.loss(n, d)}
  runs.update(change)
  return runs


@pytest.mark.parametrize(
  "runs, message",
  [
    (_runs_with(n=grid()[0][:3], d=grid()[1][:3], loss=np.ones(3)), "at least 4 runs"),
    (_runs_with(loss=np.r_[np.nan, np.ones(29)]), "loss of run 0 is nan.*drop runs"),
    (_runs_with(d=np.r_[0.0, grid()[1][1:]]), "tokens of run 0 is 0.0.*positive"),
    (_runs_with(n=np.full(30, 1e4)), "at least 2 distinct model sizes"),
    (_runs_with(d=np.full(30, 1e6)), "at least 2 distinct token budgets"),
    (_runs_with(loss=np.ones(29)), "one of each per run"),
  ],
)
def test_bad_runs_are_refused_with_the_fix(runs, message):
  with pytest.raises(ScalingError, match=message) as caught:
    fit.fit_parametric(runs["n"], runs["d"], runs["loss"])
  assert isinstance(caught.value, UserError) and isinstance(caught.value, ValueError)
  with pytest.raises(ScalingError, match=message):
    fit.bootstrap_parametric(runs["n"], runs["d"], runs["loss"], samples=10)


def test_bad_options_are_refused_with_the_fix():
  n, d = grid()
  loss = TRUTH.loss(n, d)
  with pytest.raises(ScalingError, match="lower min_params"):
    fit.fit_parametric(n, d, loss, min_params=1e9)
  with pytest.raises(ScalingError, match="delta"):
    fit.fit_parametric(n, d, loss, delta=0.0)
  with pytest.raises(ScalingError, match="rows of"):
    fit.fit_parametric(n, d, loss, starts=[[1.0, 2.0]])
  with pytest.raises(ScalingError, match="at least 2"):
    fit.bootstrap_parametric(n, d, loss, samples=1)
  with pytest.raises(ScalingError, match="coverage"):
    fit.bootstrap_parametric(n, d, loss, level=90)
  with pytest.raises(ScalingError, match="positive"):
    fit.compute_optimal_summary(TRUTH, -1.0)
