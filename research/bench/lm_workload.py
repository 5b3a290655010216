"""A seeded request mix for serving benchmarks: prompt and output lengths from a stated law.

Real traffic mixes short and long answers, and how far they differ is what separates continuous
from static batching (a static batch runs to its longest request). Lengths are drawn
log-uniformly: each length L in [lo, hi] with P(L) proportional to log((L + 1) / L), i.e.
floor(exp(U(log lo, log(hi + 1)))), so every factor of two in length is about equally common, as
in chat traffic, where answers span orders of magnitude. Defaults scale with the model's context:
prompts in [n_ctx/32, n_ctx/4], outputs in [n_ctx/16, n_ctx/2] (8x apart; 8..64 new tokens at
n_ctx 128), so every request fits. Prompt tokens are drawn uniformly from the vocabulary, or taken
from a JSON file of token lists (`read_prompts`), cycled. Every output has at least 2 tokens:
LoadGen's time per output token, (latency - TTFT) / (tokens - 1), needs a second token.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Sequence

import numpy as np

from research.serving.generate import GenerationError

DISTRIBUTION = "log-uniform"
MIN_OUTPUT_TOKENS = 2  # LoadGen's TPOT divides by output tokens - 1
MIN_OUTPUT_SPREAD = 4  # outputs must vary at least 4x, as real traffic does


@dataclasses.dataclass(frozen=True)
class WorkloadSpec:
  """How a request mix is drawn: `count` requests, lengths log-uniform in the closed ranges."""

  prompt_tokens: tuple[int, int]
  output_tokens: tuple[int, int]
  count: int = 1024
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class WorkItem:
  """One request of the mix: its prompt (token ids) and how many tokens it generates."""

  prompt: tuple[int, ...]
  max_new_tokens: int


def default_spec(n_ctx: int, count: int = 1024, seed: int = 0) -> WorkloadSpec:
  """Prompts in [n_ctx/32, n_ctx/4], outputs in [n_ctx/16, n_ctx/2]: 8x apart, and fitting."""
  prompt = (max(1, n_ctx // 32), max(1, n_ctx // 4))
  output = (max(MIN_OUTPUT_TOKENS, n_ctx // 16), max(MIN_OUTPUT_TOKENS, n_ctx // 2))
  return WorkloadSpec(prompt, output, count, seed)


def check_spec(spec: WorkloadSpec, n_ctx: int, flags: dict[str, str] | None = None) -> None:
  """GenerationError naming the flag and the fix when the mix cannot be served by a model of
  context `n_ctx`: empty or reversed ranges, outputs under 2 tokens or varying less than 4x, or a
  longest prompt plus longest output beyond the context. `flags` names the options for messages."""
  flags = {"prompt": "--prompt-tokens", "output": "--output-tokens", **(flags or {})}
  (p_lo, p_hi), (o_lo, o_hi) = spec.prompt_tokens, spec.output_tokens
  if not 1 <= p_lo <= p_hi:
    raise GenerationError(
      f"{flags['prompt']} {p_lo},{p_hi}: prompt lengths must be MIN,MAX with 1 <= MIN <= MAX"
    )
  if o_lo < MIN_OUTPUT_TOKENS or o_lo > o_hi:
    raise GenerationError(
      f"{flags['output']} {o_lo},{o_hi}: output lengths must be MIN,MAX with "
      f"{MIN_OUTPUT_TOKENS} <= MIN <= MAX (a request makes at least {MIN_OUTPUT_TOKENS} new "
      f"tokens: time per output token needs a second one)"
    )
  if o_hi < MIN_OUTPUT_SPREAD * o_lo:
    raise GenerationError(
      f"{flags['output']} {o_lo},{o_hi}: output lengths must vary at least "
      f"{MIN_OUTPUT_SPREAD}x, as real traffic does; raise MAX to {MIN_OUTPUT_SPREAD * o_lo} "
      f"or lower MIN to {max(MIN_OUTPUT_TOKENS, o_hi // MIN_OUTPUT_SPREAD)}"
    )
  if p_hi + o_hi > n_ctx:
    raise GenerationError(
      f"the longest prompt ({p_hi}) plus the longest output ({o_hi}) exceed the model's context "
      f"n_ctx={n_ctx}; lower {flags['prompt']} or {flags['output']} so that MAX + MAX <= {n_ctx}"
    )
  if spec.count < 1:
    raise GenerationError(f"the request mix needs at least one request, got {spec.count}")


def log_uniform_lengths(rng: np.random.Generator, lo: int, hi: int, n: int) -> np.ndarray:
  """`n` integers in [lo, hi], log-uniform: floor(exp(U(log lo, log(hi + 1))))."""
  x = np.exp(rng.uniform(math.log(lo), math.log(hi + 1), n))
  return np.clip(np.floor(x), lo, hi).astype(np.int64)


def make_requests(
  spec: WorkloadSpec, vocab: int, prompts: Sequence[Sequence[int]] | None = None
) -> list[WorkItem]:
  """The mix: `spec.count` requests, seeded. With `prompts`, the i-th request takes prompt
  i mod len(prompts) (its length then is the file's); else random tokens of a drawn length."""
  rng = np.random.default_rng(spec.seed)
  outputs = log_uniform_lengths(rng, *spec.output_tokens, spec.count)
  if prompts:
    chosen = [tuple(int(t) for t in prompts[i % len(prompts)]) for i in range(spec.count)]
  else:
    lengths = log_uniform_lengths(rng, *spec.prompt_tokens, spec.count)
    chosen = [tuple(rng.integers(0, vocab, n).tolist()) for n in lengths]
  return [WorkItem(p, int(n)) for p, n in zip(chosen, outputs)]


def read_prompts(path: str, vocab: int, n_ctx: int, output_max: int) -> list[list[int]]:
  """Prompts from a JSON file holding a list of token-id lists; GenerationError naming the file
  and the fix for anything else, a token outside [0, vocab), or a prompt too long to serve."""
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    raise GenerationError(
      f"--prompts {path} does not exist; give a JSON file of token lists"
    ) from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise GenerationError(
      f"--prompts {path} is not JSON ({e}); give a list of token-id lists, e.g. [[1, 2], [3]]"
    ) from None
  ok = (
    isinstance(data, list)
    and data
    and all(
      isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p)
      for p in data
    )
  )
  if not ok:
    raise GenerationError(
      f"--prompts {path} must hold a non-empty list of non-empty token-id lists, e.g. [[1, 2], [3]]"
    )
  for i, p in enumerate(data):
    bad = [t for t in p if not 0 <= t < vocab]
    if bad:
      raise GenerationError(
        f"--prompts {path}: prompt {i} has token {bad[0]} outside the model's vocabulary "
        f"[0, {vocab}); map the text to this model's tokens"
      )
    if len(p) + output_max > n_ctx:
      raise GenerationError(
        f"--prompts {path}: prompt {i} ({len(p)} tokens) plus the longest output ({output_max}) "
        f"exceed the model's context n_ctx={n_ctx}; shorten the prompt or lower --output-tokens"
      )
  return data


def describe(spec: WorkloadSpec, items: Sequence[WorkItem], prompts_file: str | None) -> dict:
  """The mix as results record it: its distribution, ranges, seed and the drawn lengths' spread."""
  prompt_n = np.array([len(w.prompt) for w in items])
  output_n = np.array([w.max_new_tokens for w in items])

  def spread(x: np.ndarray) -> dict[str, Any]:
    return {
      "min": int(x.min()),
      "p50": float(np.median(x)),
      "mean": float(x.mean()),
      "max": int(x.max()),
    }

  return {
    "distribution": DISTRIBUTION,
    "formula": "floor(exp(U(log MIN, log(MAX + 1)))), clipped to [MIN, MAX]",
    "prompt_tokens_range": list(spec.prompt_tokens),
    "output_tokens_range": list(spec.output_tokens),
    "prompt_source": prompts_file or "uniform random tokens",
    "count": spec.count,
    "seed": spec.seed,
    "prompt_tokens": spread(prompt_n),
    "output_tokens": spread(output_n),
    "output_spread": float(output_n.max() / output_n.min()),
  }
