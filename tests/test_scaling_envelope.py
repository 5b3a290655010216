"""Approach 1's envelope recovers a known law's compute-optimal exponents from learning curves
drawn from it, counts each run only within its own range, and refuses bad curves."""

import math

import numpy as np
import pytest

from research.studies.scaling import ScalingError, envelope
from research.studies.scaling.law import Law

TRUTH = Law(E=1.0, A=30.0, B=60.0, alpha=0.4, beta=0.3)


def law_curves(sizes, tokens):
  return [{"params": p, "tokens": tokens, "loss": TRUTH.loss(p, tokens)} for p in sizes]


def test_envelope_of_curves_from_the_law_gives_its_exponents():
  tokens = np.geomspace(1e4, 1e9, 40)
  result = envelope.envelope(law_curves(np.geomspace(1e3, 1e6, 12), tokens), interior_only=True)
  want_a = TRUTH.beta / (TRUTH.alpha + TRUTH.beta)
  assert result["a"] == pytest.approx(want_a, abs=0.03)
  assert result["b"] == pytest.approx(1 - want_a, abs=0.03)
  lo, hi = result["flops_range"]
  assert result["tokens_per_param_min_flops"] < result["tokens_per_param_max_flops"]
  assert float(envelope.envelope_tokens_per_param(result, hi)) == pytest.approx(
    result["tokens_per_param_max_flops"]
  )
  truth_tpp = float(TRUTH.tokens_per_param_at(hi))
  assert result["tokens_per_param_max_flops"] == pytest.approx(truth_tpp, rel=0.2)
  for point in result["points"]:
    assert 6 * point["params"] * point["tokens"] == pytest.approx(point["flops"])
    # Linear in log tokens between evaluations: a chord of the convex curve, just above it.
    on_law = float(TRUTH.loss(point["params"], point["tokens"]))
    assert on_law - 1e-12 <= point["loss"] <= on_law * 1.001


def test_a_run_counts_only_within_its_own_range():
  small, big = 1e3, 1e5
  curves = [
    {"params": small, "tokens": np.geomspace(1e3, 1e8, 30)},
    {"params": big, "tokens": np.geomspace(1e3, 1e5, 10)},  # stopped early
  ]
  for curve in curves:
    curve["loss"] = TRUTH.loss(curve["params"], curve["tokens"])
  result = envelope.envelope(curves, points=200)
  last_big = 6 * big * 1e5
  beyond = [p for p in result["points"] if p["flops"] > last_big * 1.001]
  assert beyond and all(p["params"] == small for p in beyond)
  # Where both ran, the law prefers the big model at the big model's end.
  at_end = min(result["points"], key=lambda p: abs(math.log(p["flops"] / last_big)))
  assert at_end["params"] == big


def test_envelope_ignores_the_evaluation_before_training():
  tokens = np.concatenate([[0.0], np.geomspace(1e4, 1e8, 20)])
  curves = [
    {"params": p, "tokens": tokens, "loss": np.concatenate([[50.0], TRUTH.loss(p, tokens[1:])])}
    for p in (1e3, 1e4, 1e5)
  ]
  result = envelope.envelope(curves, points=100)
  assert result["flops_range"][0] == pytest.approx(6 * 1e3 * 1e4)
  assert all(p["loss"] < 50.0 for p in result["points"])


def test_bootstrap_envelope_contains_the_truth_and_repeats():
  curves = law_curves(np.geomspace(1e3, 1e6, 12), np.geomspace(1e4, 1e9, 30))
  result = envelope.bootstrap_envelope(curves, samples=40, seed=1, interior_only=True, points=300)
  want_a = TRUTH.beta / (TRUTH.alpha + TRUTH.beta)
  lo, hi = result["ci"]["a"]
  assert lo - 0.02 <= want_a <= hi + 0.02  # a staircase of 12 sizes: allow the step's width
  assert result["ci"]["b"][0] == pytest.approx(1 - hi)
  again = envelope.bootstrap_envelope(curves, samples=40, seed=1, interior_only=True, points=300)
  assert again["ci"] == result["ci"]


@pytest.mark.parametrize(
  "curves, message",
  [
    ([], "no learning curves"),
    ([{"params": 1e3, "tokens": [1, 2]}], "lacks 'loss'"),
    (law_curves([1e4, 1e4], np.geomspace(1e4, 1e6, 5)), "at least 2 sizes"),
    ([{"params": 1e3, "tokens": [3.0, 2.0], "loss": [2.0, 1.9]}] * 2, "increasing"),
    ([{"params": 1e3, "tokens": [1e4], "loss": [2.0]}] * 2, "at least twice"),
    ([{"params": -5, "tokens": [1.0, 2.0], "loss": [2.0, 1.9]}], "positive parameter count"),
    ([{"params": 1e3, "tokens": [1.0, 2.0], "loss": [2.0, np.inf]}], "diverged"),
  ],
)
def test_bad_curves_are_refused_with_the_fix(curves, message):
  with pytest.raises(ScalingError, match=message):
    envelope.envelope(curves)


def test_one_size_winning_everywhere_is_refused():
  curves = law_curves([1e3, 1e6], np.geomspace(1e4, 1e6, 10))
  with pytest.raises(ScalingError, match="add sizes"):
    envelope.envelope(curves, interior_only=True)
