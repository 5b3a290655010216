"""Token streams from a random sparse Markov chain: a language whose best possible loss is known.

A next-token model trained on these streams can do no better than the chain's entropy rate (in
nats/token; divide by ln 2 for bits), so the gap between its validation loss and
`entropy_rate(source)` is exactly how much it has left to learn.
"""

from __future__ import annotations

import bisect
import dataclasses
import math

import numpy as np

from research.data.dataset import DataError
from research.data.tokens import TokenCorpus

_ROW_TOLERANCE = 1e-9  # how far a transition row may sum from 1
_STATIONARY_TOLERANCE = 1e-10  # largest |pi P - pi| accepted for a stationary distribution


@dataclasses.dataclass(frozen=True)
class MarkovSource:
  """A first-order chain over tokens 0..V-1: `transition[i, j]` = P(next = j | current = i).

  The arrays are read-only so the frozen dataclass is frozen all the way down.
  """

  transition: np.ndarray
  stationary: np.ndarray
  vocab_size: int


def make_markov_source(
  vocab_size: int = 32, branching: int = 4, seed: int = 0, concentration: float = 1.0
) -> MarkovSource:
  """A random chain where every token has exactly `branching` possible successors.

  Row i always contains (i + 1) % V, so the ring 0 -> 1 -> ... -> V-1 -> 0 makes every state
  reachable from every other (irreducible); row 0 also always contains 0, a self-loop, so the
  chain has cycles of length 1 and V and hence period gcd(1, V) = 1 (aperiodic). Together these
  make the stationary distribution unique and the sample averages converge to it. The remaining
  successors are drawn without replacement by `np.random.default_rng(seed)`, and each row's
  probabilities come from Dirichlet(`concentration`): small values give peaked rows (low
  entropy), large values near-uniform ones (entropy near log(branching)).
  """
  if vocab_size < 2:
    raise DataError(f"vocab_size must be at least 2, got {vocab_size}; pass vocab_size >= 2")
  if not 2 <= branching <= vocab_size:
    raise DataError(
      f"branching must be in [2, vocab_size={vocab_size}], got {branching}; "
      f"2 is the least that keeps the chain aperiodic"
    )
  if not (math.isfinite(concentration) and concentration > 0):
    raise DataError(
      f"concentration must be a positive number, got {concentration}; pass e.g. concentration=1.0"
    )
  rng = np.random.default_rng(seed)
  transition = np.zeros((vocab_size, vocab_size), dtype=np.float64)
  for i in range(vocab_size):
    forced = [(i + 1) % vocab_size] + ([0] if i == 0 else [])
    others = np.setdiff1d(np.arange(vocab_size), forced)
    extra = rng.choice(others, size=branching - len(forced), replace=False)
    successors = np.concatenate([np.asarray(forced), extra])
    transition[i, successors] = _positive_dirichlet(rng, concentration, branching)
  stationary = stationary_distribution(transition)
  transition.setflags(write=False)
  stationary.setflags(write=False)
  return MarkovSource(transition, stationary, vocab_size)


def _positive_dirichlet(rng: np.random.Generator, concentration: float, size: int) -> np.ndarray:
  # A tiny concentration can underflow some weights to exactly 0, which would drop a successor
  # (and perhaps the edge that keeps the chain irreducible); redraw rather than distort the law.
  for _ in range(100):
    weights = rng.dirichlet(np.full(size, concentration))
    if np.all(weights > 0) and np.all(np.isfinite(weights)):
      return weights
  raise DataError(
    f"concentration={concentration} is so small that Dirichlet weights underflow "
    f"to 0; pass concentration >= 0.05"
  )


def stationary_distribution(transition: np.ndarray) -> np.ndarray:
  """The unique pi with pi P = pi and sum(pi) = 1, solved as one linear system.

  Stacks (P^T - I) pi = 0 with the row 1^T pi = 1 and solves by least squares; a rank below V
  means more than one stationary distribution (a reducible chain), which is an error.
  """
  p = np.asarray(transition, dtype=np.float64)
  _check_transition(p)
  n = p.shape[0]
  system = np.vstack([p.T - np.eye(n), np.ones((1, n))])
  rhs = np.concatenate([np.zeros(n), [1.0]])
  if np.linalg.matrix_rank(system) < n:
    raise DataError(
      "the chain is reducible, so its stationary distribution is not unique; "
      "make every state reachable from every other"
    )
  pi, *_ = np.linalg.lstsq(system, rhs, rcond=None)
  if pi.min() < -_STATIONARY_TOLERANCE:
    raise DataError(
      f"stationary distribution came out negative ({pi.min():.3g}); check the transition matrix"
    )
  pi = np.clip(pi, 0.0, None)
  pi /= pi.sum()
  residual = np.abs(pi @ p - pi).max()
  if residual > _STATIONARY_TOLERANCE or abs(pi.sum() - 1.0) > _STATIONARY_TOLERANCE:
    raise DataError(
      f"stationary distribution is inaccurate (|pi P - pi| = {residual:.3g}); "
      f"check the transition matrix"
    )
  return pi


def _check_transition(p: np.ndarray) -> None:
  if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] == 0:
    raise DataError(f"transition matrix must be square (V, V), got shape {p.shape}")
  if not np.all(np.isfinite(p)) or p.min() < 0:
    raise DataError("transition matrix must hold finite non-negative probabilities")
  worst = np.abs(p.sum(axis=1) - 1.0).max()
  if worst > _ROW_TOLERANCE:
    raise DataError(
      f"transition rows must sum to 1 (worst is off by {worst:.3g}); normalize each row"
    )


def entropy_rate(source: MarkovSource) -> float:
  """H = -sum_i pi_i sum_j P_ij log P_ij in nats/token (0 log 0 = 0): the least achievable loss."""
  p = source.transition
  logs = np.log(np.where(p > 0, p, 1.0))  # log 1 = 0 stands in for 0 log 0
  return float(-(source.stationary * (p * logs).sum(axis=1)).sum())


def bits_per_token(source: MarkovSource) -> float:
  """The entropy rate in bits/token (nats / ln 2)."""
  return entropy_rate(source) / math.log(2)


def sample_tokens(source: MarkovSource, n_tokens: int, seed: int) -> np.ndarray:
  """`n_tokens` consecutive states as int32, the first drawn from the stationary distribution.

  The uniforms are drawn in one vectorized call; the walk itself is inherently sequential, so it
  is a tight Python loop over each row's few successors (bisect on the row's cumulative
  probabilities): 0.14-0.45 s per million tokens on one shared CPU core, whatever the vocabulary.
  """
  if n_tokens < 1:
    raise DataError(f"n_tokens must be at least 1, got {n_tokens}")
  rng = np.random.default_rng(seed)
  uniforms = rng.random(n_tokens)
  start_cdf = np.cumsum(source.stationary)
  state = min(int(np.searchsorted(start_cdf, uniforms[0], side="right")), source.vocab_size - 1)
  rows = []
  for row in source.transition:
    successors = np.flatnonzero(row)
    cdf = np.cumsum(row[successors]).tolist()
    cdf[-1] = 1.0  # uniforms are < 1, so rounding in the sum can never step past the last one
    rows.append((cdf, successors.tolist()))
  out = [state]
  append, bisect_right = out.append, bisect.bisect_right
  for u in uniforms[1:].tolist():
    cdf, successors = rows[state]
    state = successors[bisect_right(cdf, u)]
    append(state)
  return np.asarray(out, dtype=np.int32)


def load_markov_corpus(
  vocab_size: int = 32,
  branching: int = 4,
  source_seed: int = 0,
  train_tokens: int = 1_000_000,
  val_tokens: int = 100_000,
  sample_seed: int = 1,
  concentration: float = 1.0,
) -> TokenCorpus:
  """One stationary walk of train + val tokens, cut contiguously: train first, val after.

  `source_seed` fixes the language (the chain), `sample_seed` the text drawn from it, so two
  corpora with the same chain and different samples share their entropy rate.
  """
  if train_tokens < 2 or val_tokens < 2:
    raise DataError(
      f"train_tokens and val_tokens must each be at least 2, got {train_tokens} and {val_tokens}"
    )
  source = make_markov_source(vocab_size, branching, source_seed, concentration)
  stream = sample_tokens(source, train_tokens + val_tokens, sample_seed)
  return TokenCorpus(
    name=f"markov_v{vocab_size}_b{branching}_s{source_seed}"
    + ("" if concentration == 1.0 else f"_c{concentration:g}"),
    train=stream[:train_tokens],
    val=stream[train_tokens:],
    vocab_size=vocab_size,
    entropy_rate=entropy_rate(source),
    itos=None,
  )
