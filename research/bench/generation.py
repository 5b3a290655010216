"""Generation latency and throughput of a Transformer LM, each timed call blocking on its result.

Real-time (batch 1), as a chat server sees it: time to first token (prefill of the prompt and the
first sample) and time per output token (one decode step against the KV cache, then the sample),
every token timed on its own so the tail shows. Batch: whole generations of `new_tokens` at
several batch sizes, from the one compiled prefill + scan of decode steps, as tokens/s. The first
call of every compiled function is timed apart: it includes compilation.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.bench.timing import median_and_percentiles, time_calls
from research.serving.generate import GenerationError, Generator


def _stats_ms(seconds: Sequence[float]) -> dict[str, float]:
  s = median_and_percentiles(np.asarray(seconds), (90, 99))
  return {**{f"{k}_ms": s[k] * 1e3 for k in ("p50", "p90", "p99", "min", "max")}, "n": s["n"]}


def _first_call_seconds(fn) -> float:
  t = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t


def check_fits(n_ctx: int, prompt_tokens: int, new_tokens: int) -> None:
  """GenerationError when a prompt and its new tokens exceed the context: check it before the
  slow parts of a report, so the bad request fails at once."""
  if prompt_tokens + new_tokens > n_ctx:
    raise GenerationError(
      f"prompt {prompt_tokens} + {new_tokens} new tokens exceed the model's n_ctx {n_ctx}; "
      "lower --prompt-tokens or --new-tokens"
    )


def realtime_generation(
  generator: Generator, params: Any, prompt_1xP: jax.Array, new_tokens: int, sequences: int = 20
) -> dict[str, Any]:
  """TTFT and TPOT at batch 1 over `sequences` greedy generations of `new_tokens` tokens."""
  if prompt_1xP.shape[0] != 1:
    raise GenerationError(
      f"real-time generation is batch 1, got a prompt of shape {prompt_1xP.shape}"
    )
  length = prompt_1xP.shape[1]
  check_fits(generator.model.n_ctx, length, new_tokens)
  key = jax.random.key(0)
  sample = lambda logits, i: generator.next_token(logits, 0.0, key, i)  # noqa: E731

  def first_token():
    logits, cache = generator.prefill(params, prompt_1xP)
    return sample(logits, 0), cache

  compile_s = {"prefill_and_sample": _first_call_seconds(lambda: first_token()[0])}
  _, cache = first_token()
  compile_s["decode_step"] = _first_call_seconds(
    lambda: generator.decode_step(params, jnp.zeros((1,), jnp.int32), cache, length)[0]
  )
  ttft = time_calls(lambda: first_token()[0].block_until_ready(), n_calls=sequences, warmup=3)
  per_token = []
  for _ in range(sequences):
    token, cache = first_token()
    token.block_until_ready()
    for i in range(1, new_tokens):
      t = time.perf_counter()
      logits, cache = generator.decode_step(params, token, cache, length + i - 1)
      token = sample(logits, i).block_until_ready()
      per_token.append(time.perf_counter() - t)
  tpot = _stats_ms(per_token)
  return {
    "prompt_tokens": int(length),
    "new_tokens": int(new_tokens),
    "sequences": sequences,
    "ttft": _stats_ms(ttft),
    "tpot": tpot,
    "tokens_per_second": 1e3 / tpot["p50_ms"],
    "first_call_seconds": compile_s,
  }


def engine_realtime_generation(
  model: Any, params: Any, prompt: Sequence[int], new_tokens: int, sequences: int = 20
) -> dict[str, Any]:
  """`realtime_generation`'s figures from a one-slot `DecodeEngine`, as it serves a lone request:
  TTFT is prefill (the first token on the host) plus insert; TPOT is one `generate()` (the
  slot's token on the host). The lockstep Generator pays a second dispatch per token for the
  sampler: 0.128 against 0.064 ms p50 on lm_markov_tiny here."""
  from research.serving.decode_engine import DecodeEngine, Request

  check_fits(model.n_ctx, len(prompt), new_tokens)
  engine = DecodeEngine(model, params, 1, prefill_buckets=(len(prompt),))
  compile_s = engine.warmup()
  request = Request(0, list(prompt), new_tokens)

  def first_token() -> None:
    engine.insert(engine.prefill(request), 0)

  for _ in range(3):  # warm-up, excluded
    first_token()
    engine.free(0)
  ttft, per_token = [], []
  for _ in range(sequences):
    t = time.perf_counter()
    first_token()
    ttft.append(time.perf_counter() - t)
    for _ in range(1, new_tokens):
      t = time.perf_counter()
      engine.generate()
      per_token.append(time.perf_counter() - t)
    engine.free(0)
  tpot = _stats_ms(per_token)
  return {
    "prompt_tokens": len(prompt),
    "new_tokens": int(new_tokens),
    "sequences": sequences,
    "ttft": _stats_ms(ttft),
    "tpot": tpot,
    "tokens_per_second": 1e3 / tpot["p50_ms"],
    "first_call_seconds": {
      "prefill_and_sample": float(sum(compile_s.get("prefill", {}).values())),
      "decode_step": float(sum(compile_s.get("generate", {}).values())),
    },
    "compilations_after_warmup": engine.compilations_after_warmup,
    "engine": "DecodeEngine, 1 slot",
  }


def batched_generation(
  generator: Generator,
  params: Any,
  prompt_len: int,
  new_tokens: int,
  batch_sizes: Sequence[int],
  vocab_size: int,
  repeats: int = 5,
) -> list[dict[str, Any]]:
  """Tokens/s of whole greedy generations (one compiled program each) at each batch size."""
  rng = np.random.default_rng(0)
  records = []
  for batch in batch_sizes:
    prompt = jnp.asarray(rng.integers(0, vocab_size, (batch, prompt_len)), jnp.int32)
    run = lambda prompt=prompt: np.asarray(  # noqa: E731
      generator.generate_scan(params, prompt, new_tokens)
    )
    first = _first_call_seconds(run)
    seconds = time_calls(run, n_calls=repeats, warmup=1)
    p50 = float(np.median(seconds))
    records.append(
      {
        "batch_size": int(batch),
        "seconds_p50": p50,
        "seconds_min": float(seconds.min()),
        "tokens_per_second": batch * new_tokens / p50,
        "ms_per_token_per_sequence": 1e3 * p50 / new_tokens,
        "first_call_seconds": first,
      }
    )
  return records


def engine_decode_sweep(
  model: Any,
  params: Any,
  batch_sizes: Sequence[int],
  prompt_tokens: int = 16,
  new_tokens: int = 64,
  decode_buckets: Sequence[int] | None = None,
  repeats: int = 3,
  **engine_kw: Any,
) -> list[dict[str, Any]]:
  """Decode tokens/s of a `DecodeEngine` with every slot busy, at each slot count.

  Per slot count: an engine of that many slots, warmed up; then `repeats` times every slot gets
  a random prompt of `prompt_tokens` and `new_tokens - 1` decode steps are timed one by one (each
  step's tokens copied to the host, as a server must). tokens/s is slots / the median step;
  `decode_buckets=(n_ctx,)` gives the engine that scores the whole cache every step.
  """
  from research.serving.decode_engine import DecodeEngine, Request

  check_fits(model.n_ctx, prompt_tokens, new_tokens)
  rng = np.random.default_rng(0)
  records = []
  for batch in batch_sizes:
    engine = DecodeEngine(
      model,
      params,
      batch,
      prefill_buckets=(prompt_tokens,),
      decode_buckets=decode_buckets,
      **engine_kw,
    )
    compile_s = engine.warmup()
    steps = []
    for _ in range(repeats):
      for slot in range(batch):
        prompt = rng.integers(0, model.num_classes, prompt_tokens).tolist()
        engine.insert(engine.prefill(Request(slot, prompt, new_tokens)), slot)
      for _ in range(new_tokens - 1):
        t = time.perf_counter()
        engine.generate()
        steps.append(time.perf_counter() - t)
      for slot in range(batch):
        engine.free(slot)
    step = _stats_ms(steps)
    records.append(
      {
        "batch_size": int(batch),
        "step": step,
        "tokens_per_second": batch * 1e3 / step["p50_ms"],
        "tokens_per_second_mean": batch * len(steps) / float(np.sum(steps)),
        "decode_buckets": list(engine.decode_buckets),
        "decode_step_seconds_at_warmup": engine.decode_step_seconds,
        "compile_seconds": float(sum(sum(v.values()) for v in compile_s.values())),
        "compilations_after_warmup": engine.compilations_after_warmup,
      }
    )
  return records


# The engine variants `decode_variants` compares: the cache layout, and the decode buckets
# (None: the engine's default, powers of two up to n_ctx; "n_ctx": every step scores the whole
# cache, as the lockstep Generator does).
DECODE_VARIANTS = {
  "BTHD, whole cache": ("BTHD", "n_ctx"),
  "BTHD, buckets": ("BTHD", None),
  "BHTD, whole cache": ("BHTD", "n_ctx"),
  "BHTD, buckets": ("BHTD", None),
}


def decode_variants(
  model: Any,
  params: Any,
  batch_sizes: Sequence[int],
  prompt_tokens: int = 16,
  new_tokens: int = 64,
  repeats: int = 3,
  variants: Sequence[str] = tuple(DECODE_VARIANTS),
) -> dict[str, Any]:
  """Decode tokens/s per slot count for each engine variant, beside the lockstep Generator's
  batch-1 time per output token (the baseline batch-1 engine steps must not lose to)."""
  if not hasattr(model, "cache_layout"):
    raise GenerationError(f"{type(model).__name__} has no cache_layout to compare")
  out: dict[str, Any] = {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "variants": {}}
  for name in variants:
    layout, buckets = DECODE_VARIANTS[name]
    variant = model.clone(cache_layout=layout)
    out["variants"][name] = engine_decode_sweep(
      variant,
      params,
      batch_sizes,
      prompt_tokens,
      new_tokens,
      (model.n_ctx,) if buckets == "n_ctx" else buckets,
      repeats,
    )
  prompt = jnp.asarray(
    np.random.default_rng(0).integers(0, model.num_classes, (1, prompt_tokens)), jnp.int32
  )
  out["generator_realtime"] = realtime_generation(
    Generator(model), params, prompt, new_tokens, sequences=10 * repeats
  )
  return out
