"""The memory side of a language model: a roofline per phase (train step, prefill, decode).

A phase's arithmetic intensity is its FLOPs per byte moved to or from memory. Its roofline bound
is min(matmul peak, intensity x memory bandwidth): below the ridge point (peak / bandwidth
FLOPs per byte) the phase is memory-bound, above it compute-bound. Both ceilings are measured in
the same process as the phases, pinned to one core with one XLA thread:

  matmul peak    a float32 square `jnp.dot` (2 n^3 FLOPs), the median of `repeats` calls;
  bandwidth      a STREAM triad a = b + s c on arrays far larger than the caches, counted as
                 STREAM counts it: 3 x 4 bytes per float32 element (b and c read, a written;
                 the write-allocate read of a not counted), the median of `repeats` calls.
                 Also a triad on arrays that fit the last-level cache (`cache_triad`), a
                 second, higher roof for working sets that never leave it.

FLOPs are the codebase's exact counts (`research.models.transformer_flops`); bytes are the
analytic counts below (`phase_bytes`); XLA's `cost_analysis` ("bytes accessed", which counts
every HLO operand and result, fused intermediates and whole in-place buffers included) is
recorded beside them as a cross-check, not used.

Decode (S = 1 new token per row, B rows, k cache positions scored) moves per step:
  weights      every parameter once (the tied embedding is read whole by the unembedding);
  kv_read      B x n_layer x 2 (k, v) x k x d_model x 4 B: the cache positions scored;
  kv_write     B x n_layer x 2 x d_model x 4 B: the new token's keys and values;
  activations  B x 4 B x (n_layer (10 d + 2 d_ff + 2 heads k) + 3 d + vocab): each matmul reads
               its input and writes its output once (elementwise ops fused into them), the
               attention scores are written and read once, two embedding rows, the logits.
Per row, FLOPs and kv_read both grow with k, so decode intensity rises with the batch only
while the weights dominate: it tends to (FLOPs per row) / (bytes per row) as B grows, and if
that limit is below the ridge, decode stays memory-bound at every batch (`crossover`).

Where a decode step's time goes (lm_markov_tiny's shape, 128 slots scoring all 128 positions,
one core, jax.profiler; rough, on a busy 2-core machine): of about 1.3 ms, the four attention
dots (scores and values, two layers: batched matrix-vector products over the cache, run by
XLA:CPU's Eigen dot) about 0.58 ms, reading 4 MiB each at about 30 GB/s, under half of what
the cache-resident triad reaches; the weight matmuls (YNNPACK fusions) about 0.35 ms, near the
matmul peak; the causal mask's select about 0.08 ms; the rest (softmax, LayerNorm, scatter of
the new keys and values, in place) little each. Rewriting the attention as multiply-and-sum
(reads a sliced cache in place, no copy) or as flattened `dot_general`s was not faster.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.errors import UserError
from research.models import transformer_flops as tf
from research.models import tree_bytes

FLOAT32_BYTES = 4
TRIAD_BYTES_PER_ELEMENT = 3 * FLOAT32_BYTES  # STREAM's count: b, c read, a written
TRIAD_SCALAR = 3.0
# Adam's state per parameter (m, v), for the train step's bytes; SGD with momentum has one.
OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "sgd": 0, "momentum": 1}


class RooflineError(UserError, ValueError):
  """A roofline that cannot be measured as asked."""


# ----------------------------------------------------------------------------------------------
# Peaks


def _check_threads(threads: int) -> dict[str, Any]:
  """Pins to one core and one XLA thread for threads=1 (a no-op when already pinned); the
  settings the numbers were measured under."""
  from research.runtime import configure_threads, thread_settings

  if threads not in (0, 1):
    raise RooflineError(f"threads must be 0 (XLA's pool) or 1 (one pinned core), got {threads}")
  if threads == 1:
    try:
      configure_threads(1)
    except RuntimeError:
      raise RooflineError(
        "threads=1 needs one XLA thread, which is fixed when JAX starts; call "
        "research.runtime.configure_threads(1) before any JAX work (scripts: --threads 1) or "
        "pass threads=0"
      ) from None
  return {"threads": threads, **thread_settings()}


def _median_seconds(fn, args, repeats: int) -> dict[str, float]:
  """Compiles `fn` at `args` (timed apart), one warm call, then `repeats` blocking calls."""
  t = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t
  jax.block_until_ready(compiled(*args))
  seconds = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    seconds.append(time.perf_counter() - t)
  return {
    "seconds_p50": float(np.median(seconds)),
    "seconds_min": float(np.min(seconds)),
    "seconds_max": float(np.max(seconds)),
    "repeats": int(repeats),
    "compile_seconds": compile_s,
  }


def measure_matmul(n: int = 1536, repeats: int = 7) -> dict[str, Any]:
  """FLOP/s of an n x n float32 `jnp.dot` (2 n^3 FLOPs), the median of `repeats` calls."""
  key = jax.random.key(0)
  a = jax.random.normal(key, (n, n), jnp.float32)
  b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), jnp.float32)
  t = _median_seconds(jnp.dot, (a, b), repeats)
  flops = 2.0 * n**3
  return {
    "flops_per_s": flops / t["seconds_p50"],
    "flops_per_s_best": flops / t["seconds_min"],
    "n": int(n),
    "dtype": "float32",
    "flops_per_call": flops,
    **t,
  }


def measure_triad(elements: int = 2**25, repeats: int = 10) -> dict[str, Any]:
  """Bytes/s of a STREAM triad a = b + s c on float32 arrays of `elements`, counted as STREAM
  counts it (3 x 4 B per element), the median of `repeats` calls.

  `a` is donated and written in place, as STREAM's loop writes its array: a fresh 128 MiB
  output every call page-faults it in, which measured 5.4 GB/s instead of 27 on this core.
  """
  b = jnp.ones((elements,), jnp.float32)
  c = jnp.full((elements,), 2.0, jnp.float32)
  a = jnp.zeros((elements,), jnp.float32)
  t = time.perf_counter()
  triad = (
    jax.jit(lambda a, b, c: b + TRIAD_SCALAR * c, donate_argnums=0, keep_unused=True)
    .lower(a, b, c)
    .compile()
  )
  compile_s = time.perf_counter() - t
  a = triad(a, b, c).block_until_ready()
  seconds = []
  for _ in range(repeats):
    t = time.perf_counter()
    a = triad(a, b, c).block_until_ready()
    seconds.append(time.perf_counter() - t)
  moved = float(TRIAD_BYTES_PER_ELEMENT * elements)
  p50 = float(np.median(seconds))
  return {
    "bytes_per_s": moved / p50,
    "bytes_per_s_best": moved / float(np.min(seconds)),  # what STREAM itself reports
    "elements": int(elements),
    "array_bytes": int(FLOAT32_BYTES * elements),
    "bytes_per_call": moved,
    "seconds_p50": p50,
    "seconds_min": float(np.min(seconds)),
    "seconds_max": float(np.max(seconds)),
    "repeats": int(repeats),
    "compile_seconds": compile_s,
  }


def measure_peaks(
  threads: int = 1,
  *,
  matmul_n: int = 1536,
  triad_elements: int = 2**25,
  cache_triad_elements: int = 2**19,
  repeats: int = 7,
) -> dict[str, Any]:
  """This machine's matmul peak and memory bandwidth, measured now, and the ridge point.

  Defaults: a 1536^2 matmul (7 GFLOP a call); triad arrays of 128 MiB each, 4x the 32 MiB L3 of
  the 2-core EPYC this was written on, as STREAM asks; the cache triad's 3 x 2 MiB fit in L3 but
  not in L2. Pass small sizes for a quick check (tests).
  """
  settings = _check_threads(threads)
  matmul = measure_matmul(matmul_n, repeats)
  triad = measure_triad(triad_elements, max(2 * repeats, 3))
  cache = measure_triad(cache_triad_elements, max(repeats, 3) * 10)
  peak, bandwidth = matmul["flops_per_s"], triad["bytes_per_s"]
  return {
    "matmul_flops_per_s": peak,
    "triad_bytes_per_s": bandwidth,
    "ridge_flops_per_byte": peak / bandwidth,
    "cache_triad_bytes_per_s": cache["bytes_per_s"],
    "cache_ridge_flops_per_byte": peak / cache["bytes_per_s"],
    "matmul": matmul,
    "triad": triad,
    "cache_triad": cache,
    "how": (
      "medians of blocking calls of compiled functions after one warm call, compile timed apart; "
      "matmul: float32 n x n jnp.dot, 2 n^3 FLOPs; triad: a = b + 3 c in float32, "
      "3 x 4 B per element (STREAM's count)"
    ),
    "backend": jax.default_backend(),
    "device": str(jax.devices()[0]),
    "thread_settings": settings,
  }


# ----------------------------------------------------------------------------------------------
# Analytic counts


def kv_memory(model: Any, params: Any, budgets_bytes: Mapping[str, int]) -> dict[str, Any]:
  """KV-cache bytes per token and per slot (`research.serving.decode_engine.kv_cache_bytes`) and
  how many sequences of up to n_ctx tokens fit in each named memory budget beside the params."""
  from research.serving.decode_engine import kv_cache_bytes, max_slots

  return {
    **kv_cache_bytes(model),
    "params_bytes": tree_bytes(params),
    "slots_that_fit": {name: max_slots(model, b, params) for name, b in budgets_bytes.items()},
    "budgets_bytes": dict(budgets_bytes),
  }


def _shape(model: Any) -> dict[str, Any]:
  return {
    k: getattr(model, k)
    for k in ("num_classes", "n_layer", "d_model", "n_head", "d_ff", "n_ctx", "tied_embeddings")
  }


def _activation_elements(c: Mapping[str, Any], key_len: int, cached: bool) -> float:
  """Elements each token's activations move through memory in a forward pass: each matmul's
  input and output once, the scores written and read once, two embedding rows, the logits.
  With a cache the attention's keys and values are the cache's bytes (counted apart)."""
  d, f, h = c["d_model"], c["d_ff"], c["n_head"]
  per_layer = (10 if cached else 12) * d + 2 * f + 2 * h * key_len
  return c["n_layer"] * per_layer + 3 * d + c["num_classes"]


def kv_bytes_per_position(model: Any, itemsize: int = FLOAT32_BYTES) -> int:
  """One cache position of one row, all layers: n_layer x (k, v) x d_model x itemsize."""
  return 2 * model.n_layer * model.d_model * itemsize


def decode_bytes(
  model: Any, params_bytes: int, batch: int, key_len: int, itemsize: int = FLOAT32_BYTES
) -> dict[str, float]:
  """Bytes one decode step (one new token per row) moves, by term (module docstring)."""
  c = _shape(model)
  per_position = kv_bytes_per_position(model, itemsize)
  return {
    "weights": float(params_bytes),
    "kv_read": float(batch * key_len * per_position),
    "kv_write": float(batch * per_position),
    "activations": float(batch * FLOAT32_BYTES * _activation_elements(c, key_len, True)),
  }


def prefill_bytes(
  model: Any, params_bytes: int, batch: int, tokens: int, itemsize: int = FLOAT32_BYTES
) -> dict[str, float]:
  """Bytes a prefill of `tokens` per row moves: weights once, its keys and values written to
  the cache and read once by the attention matmuls, every token's activations."""
  c = _shape(model)
  per_position = kv_bytes_per_position(model, itemsize)
  return {
    "weights": float(params_bytes),
    "kv_read": float(batch * tokens * per_position),
    "kv_write": float(batch * tokens * per_position),
    "activations": float(batch * tokens * FLOAT32_BYTES * _activation_elements(c, tokens, True)),
  }


def train_step_bytes(
  model: Any, params_bytes: int, batch: int, seq_len: int, optimizer: str = "adam"
) -> dict[str, float]:
  """Bytes a train step on `batch` windows of `seq_len` moves.

  weights: read forward and backward, the gradient written, then the update reads gradient,
  parameter and each optimizer slot and writes parameter and slots: (5 + 2 slots) x params.
  activations: the forward's (as prefill's, keys and values included), and backward reads the
  saved activations and the incoming gradients and writes the outgoing ones: 3x the forward's.
  """
  c = _shape(model)
  slots = OPTIMIZER_SLOTS.get(optimizer, 2)
  forward = batch * seq_len * FLOAT32_BYTES * _activation_elements(c, seq_len, False)
  return {"weights": float((5 + 2 * slots) * params_bytes), "activations": float(3 * forward)}


def bound(intensity: float, peaks: Mapping[str, Any], bandwidth_key: str = "triad_bytes_per_s"):
  """(bound FLOP/s, 'memory' or 'compute'): min(peak, intensity x bandwidth) and which won."""
  peak, bandwidth = peaks["matmul_flops_per_s"], peaks[bandwidth_key]
  memory = intensity * bandwidth
  return (memory, "memory") if memory < peak else (peak, "compute")


def roofline_point(
  phase: str,
  batch: int,
  flops: float,
  bytes_by_term: Mapping[str, float],
  seconds: float,
  peaks: Mapping[str, Any],
  **extra: Any,
) -> dict[str, Any]:
  """One phase's point: intensity, bound and the achieved fraction of it (against the DRAM
  roof, and beside it the cache-resident roof when measured). A working set that stays in cache
  (lm_markov_tiny's 441 KiB of weights, its 16 MiB KV cache at 128 slots, in a 32 MiB L3) is not
  held to the DRAM roof: `fraction` can then pass 1, and `cache_fraction` is the stricter one."""
  moved = float(sum(bytes_by_term.values()))
  intensity = flops / moved
  bound_flops, which = bound(intensity, peaks)
  achieved = flops / seconds
  point = {
    "phase": phase,
    "batch": int(batch),
    "flops": float(flops),
    "bytes": moved,
    "bytes_terms": dict(bytes_by_term),
    "intensity": intensity,
    "bound": which,
    "bound_flops_per_s": bound_flops,
    "achieved_flops_per_s": achieved,
    "fraction": achieved / bound_flops,
    "seconds": float(seconds),
  }
  if "cache_triad_bytes_per_s" in peaks:
    cache_bound, cache_which = bound(intensity, peaks, "cache_triad_bytes_per_s")
    point["cache_bound"] = cache_which
    point["cache_bound_flops_per_s"] = cache_bound
    point["cache_fraction"] = achieved / cache_bound
  point.update(extra)
  return point


def _xla_cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  return {
    "flops": float(cost.get("flops", float("nan"))),
    "bytes_accessed": float(cost.get("bytes accessed", float("nan"))),
  }


# ----------------------------------------------------------------------------------------------
# Phases


def _time_compiled(compiled, args, repeats: int, donated: bool = False) -> dict[str, float]:
  """Median seconds of `repeats` blocking calls after one warm call; with `donated`, the first
  argument is replaced by the call's first result each time (a train state)."""
  args = list(args)
  out = compiled(*args)
  jax.block_until_ready(out)
  if donated:
    args[0] = out[0]
  seconds = []
  for _ in range(repeats):
    t = time.perf_counter()
    out = compiled(*args)
    jax.block_until_ready(out)
    seconds.append(time.perf_counter() - t)
    if donated:
      args[0] = out[0]
  return {"seconds_p50": float(np.median(seconds)), "seconds_min": float(np.min(seconds))}


def train_step_point(
  model: Any,
  params: Any,
  peaks: Mapping[str, Any],
  batch: int = 32,
  repeats: int = 10,
  optimizer: str = "adam",
) -> dict[str, Any]:
  """The train step (`research.training.step.make_train_step`, state donated as training
  does) on `batch` windows of n_ctx tokens with `optimizer`: timed, counted, placed."""
  from research.cost import flops as cost_flops
  from research.training.optimizers import OPTIMIZERS, make_optimizer
  from research.training.step import TrainState, make_train_step

  if optimizer not in OPTIMIZERS:
    raise RooflineError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
  opt = make_optimizer(optimizer, 1e-3)
  c, n_ctx = _shape(model), int(model.n_ctx)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, c["num_classes"], (batch, n_ctx)), jnp.int32)
  params = jax.tree.map(jnp.array, params)  # a copy: the donated state must not be the caller's
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt.init(params))
  t = time.perf_counter()
  compiled = jax.jit(make_train_step(model, opt), donate_argnums=0).lower(state, (x, x)).compile()
  compile_s = time.perf_counter() - t
  timing = _time_compiled(compiled, (state, (x, x)), repeats, donated=True)
  num_params = tf.param_count(c)
  flops = cost_flops.train_step_flops(
    {**c, "name": "transformer"}, (n_ctx,), c["num_classes"], batch, num_params, optimizer
  )
  return roofline_point(
    "train step",
    batch,
    flops,
    train_step_bytes(model, tree_bytes(params), batch, n_ctx, optimizer),
    timing["seconds_p50"],
    peaks,
    tokens=batch * n_ctx,
    tokens_per_s=batch * n_ctx / timing["seconds_p50"],
    timing=timing,
    compile_seconds=compile_s,
    xla=_xla_cost(compiled),
  )


def prefill_point(
  model: Any, params: Any, peaks: Mapping[str, Any], tokens: int, batch: int = 1, repeats: int = 20
) -> dict[str, Any]:
  """A prefill of `tokens` per row (a prefill bucket) into an empty cache, as the decode engine
  runs it (`Transformer.decode` scoring `tokens` keys): timed, counted, placed."""
  from research.models import init_decode_cache
  from research.serving.decode_engine import for_serving

  model = for_serving(model)
  if not 1 <= tokens <= model.n_ctx:
    raise RooflineError(f"prefill tokens must lie in [1, n_ctx={model.n_ctx}], got {tokens}")

  def prefill(params, prompt_BxP):
    cache = init_decode_cache(model, prompt_BxP.shape[0])
    return model.apply(params, prompt_BxP, cache, 0, key_len=tokens, method="decode")

  prompt = jnp.asarray(
    np.random.default_rng(0).integers(0, model.num_classes, (batch, tokens)), jnp.int32
  )
  t = time.perf_counter()
  compiled = jax.jit(prefill).lower(params, prompt).compile()
  compile_s = time.perf_counter() - t
  timing = _time_compiled(compiled, (params, prompt), repeats)
  flops = tf.decode_step_flops(_shape(model), batch, new_tokens=tokens, key_len=tokens)
  return roofline_point(
    "prefill",
    batch,
    flops,
    prefill_bytes(model, tree_bytes(params), batch, tokens),
    timing["seconds_p50"],
    peaks,
    tokens=batch * tokens,
    timing=timing,
    compile_seconds=compile_s,
    xla=_xla_cost(compiled),
  )


def decode_xla_check(model: Any, params: Any, batch: int, key_len: int) -> dict[str, float]:
  """XLA's FLOPs and bytes accessed for one engine-style decode step (per-row positions,
  `key_len` keys, params as arguments), beside the analytic counts of the same step."""
  from research.models import init_decode_cache

  def step(params, token_B, cache, pos_B):
    return model.apply(params, token_B[:, None], cache, pos_B, key_len=key_len, method="decode")

  cache = jax.eval_shape(lambda: init_decode_cache(model, batch))
  i32 = jax.ShapeDtypeStruct((batch,), jnp.int32)
  params_spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  compiled = jax.jit(step, donate_argnums=2).lower(params_spec, i32, cache, i32).compile()
  analytic = decode_bytes(model, tree_bytes(params), batch, key_len)
  return {
    "key_len": int(key_len),
    **{f"xla_{k}": v for k, v in _xla_cost(compiled).items()},
    "analytic_flops": tf.decode_step_flops(_shape(model), batch, key_len=key_len),
    "analytic_bytes": float(sum(analytic.values())),
  }


def decode_sweep(
  model: Any,
  params: Any,
  peaks: Mapping[str, Any],
  batches: Sequence[int],
  *,
  prompt_tokens: int = 16,
  new_tokens: int = 64,
  repeats: int = 3,
  xla_check: bool = True,
  **engine_kw: Any,
) -> list[dict[str, Any]]:
  """Decode tokens/s of the `DecodeEngine` (its serving cache layout, decode buckets pruned at
  warm-up) with every slot busy, at each slot count, placed on the roofline (`decode_points`):
  `research.bench.generation.engine_decode_sweep`, then its records read by `decode_points`."""
  from research.bench.generation import engine_decode_sweep
  from research.serving.decode_engine import for_serving

  model = for_serving(model)
  records = engine_decode_sweep(
    model, params, batches, prompt_tokens, new_tokens, repeats=repeats, **engine_kw
  )
  return decode_points(model, params, peaks, records, prompt_tokens, new_tokens, xla_check)


def decode_points(
  model: Any,
  params: Any,
  peaks: Mapping[str, Any],
  records: Sequence[Mapping[str, Any]],
  prompt_tokens: int,
  new_tokens: int,
  xla_check: bool = True,
) -> list[dict[str, Any]]:
  """`engine_decode_sweep`'s records (one per slot count) as roofline points.

  Step j of a generation writes position prompt_tokens + j and scores the smallest kept decode
  bucket k_j above it; its real context is prompt_tokens + j + 1 keys. The point's FLOPs and
  bytes are the mean over steps of the step at k_j (what the machine ran), so its achieved
  FLOP/s is that mean over the mean step time; `mfu` counts the FLOPs at the real context (the
  model's, not the bucket's padding) against the measured matmul peak. tokens_per_s is slots x
  steps over their total time (each step's tokens copied to the host, as a server must).
  """
  c = _shape(model)
  params_bytes = tree_bytes(params)
  positions = prompt_tokens + np.arange(new_tokens - 1)  # where each timed step writes
  out = []
  for r in records:
    batch, kept = r["batch_size"], r["decode_buckets"]
    scored = [kept[int(np.searchsorted(kept, p + 1))] for p in positions]
    flops = float(np.mean([tf.decode_step_flops(c, batch, key_len=k) for k in scored]))
    useful = float(np.mean([tf.decode_step_flops(c, batch, key_len=int(p) + 1) for p in positions]))
    terms = [decode_bytes(model, params_bytes, batch, k) for k in scored]
    mean_terms = {name: float(np.mean([t[name] for t in terms])) for name in terms[0]}
    tokens_per_s = r["tokens_per_second_mean"]
    step_s = batch / tokens_per_s
    # The large-batch limit of the intensity: weights amortized away, per-row terms only.
    per_row_bytes = sum(v for name, v in mean_terms.items() if name != "weights") / batch
    warm = r.get("decode_step_seconds_at_warmup", {})
    point = roofline_point(
      "decode",
      batch,
      flops,
      mean_terms,
      step_s,
      peaks,
      tokens_per_s=tokens_per_s,
      tokens_per_s_at_p50_step=r["tokens_per_second"],
      mfu=useful / step_s / peaks["matmul_flops_per_s"],
      hardware_flops_utilization=flops / step_s / peaks["matmul_flops_per_s"],
      useful_flops=useful,
      mean_context=float(np.mean(positions + 1)),
      mean_keys_scored=float(np.mean(scored)),
      decode_buckets=list(kept),
      step=r["step"],
      compile_seconds=r["compile_seconds"],
      compilations_after_warmup=r["compilations_after_warmup"],
      decode_step_seconds_at_warmup={str(k): v for k, v in warm.items()},
      flops_per_row=flops / batch,
      bytes_per_row=per_row_bytes,
      weights_bytes=float(params_bytes),
      intensity_limit=flops / batch / per_row_bytes,
    )
    point["roofline_fraction"] = point["fraction"]
    if xla_check:
      point["xla"] = decode_xla_check(model, params, batch, max(scored))
    out.append(point)
  return out


def lm_phase_points(
  model: Any,
  params: Any,
  peaks: Mapping[str, Any],
  *,
  decode_batches: Sequence[int],
  prefill_tokens: int,
  threads: int = 1,
  train_batch: int = 32,
  prompt_tokens: int = 16,
  new_tokens: int = 64,
  repeats: int = 3,
  optimizer: str = "adam",
  decode_records: Sequence[Mapping[str, Any]] | None = None,
  **engine_kw: Any,
) -> list[dict[str, Any]]:
  """One roofline point per phase: the train step (`train_batch` windows of n_ctx, `optimizer`),
  a prefill of `prefill_tokens` (batch 1, as the engine prefills a request), decode at each of
  `decode_batches` (`decode_sweep`; or read from `engine_decode_sweep` records already measured
  with these prompt and new tokens, `decode_records`)."""
  settings = _check_threads(threads)
  train_repeats, prefill_repeats = max(3, 3 * repeats), max(5, 7 * repeats)
  points = [
    train_step_point(model, params, peaks, train_batch, train_repeats, optimizer),
    prefill_point(model, params, peaks, prefill_tokens, repeats=prefill_repeats),
  ]
  if decode_records is not None:
    points += decode_points(model, params, peaks, decode_records, prompt_tokens, new_tokens)
  else:
    points += decode_sweep(
      model,
      params,
      peaks,
      decode_batches,
      prompt_tokens=prompt_tokens,
      new_tokens=new_tokens,
      repeats=repeats,
      **engine_kw,
    )
  for p in points:
    p["thread_settings"] = settings
  return points


# ----------------------------------------------------------------------------------------------
# Reading the points


def crossover(points: Sequence[Mapping[str, Any]], peaks: Mapping[str, Any]) -> dict[str, Any]:
  """Where decode turns from memory-bound to compute-bound: the batch at which its intensity
  reaches the ridge point, interpolated in log batch between the two sweep points around it;
  'beyond the sweep' (with the analytic batch, or 'never' when even the large-batch limit of
  the intensity stays below the ridge) or 'at or below the smallest batch' otherwise."""
  ridge = float(peaks["ridge_flops_per_byte"])
  decode = sorted((p for p in points if p["phase"] == "decode"), key=lambda p: p["batch"])
  if not decode:
    raise RooflineError("no decode points to find the crossover in; sweep some batch sizes")
  b = [float(p["batch"]) for p in decode]
  x = [float(p["intensity"]) for p in decode]
  out: dict[str, Any] = {
    "ridge_flops_per_byte": ridge,
    "batches": [int(v) for v in b],
    "intensities": x,
    "batch": None,
  }
  last = decode[-1]
  limit = last.get("intensity_limit")
  if limit is not None:
    out["intensity_limit"] = float(limit)
    f, per_row, w = last["flops_per_row"], last["bytes_per_row"], last["weights_bytes"]
    # B f / (w + B per_row) = ridge  =>  B = ridge w / (f - ridge per_row)
    out["analytic_batch"] = ridge * w / (f - ridge * per_row) if f > ridge * per_row else None
  if x[0] >= ridge:
    out["where"] = "at or below the smallest batch"
    out["batch"] = b[0]
  else:
    for i in range(len(x) - 1):
      if x[i] < ridge <= x[i + 1]:
        t = (ridge - x[i]) / (x[i + 1] - x[i])
        out["batch"] = float(math.exp(math.log(b[i]) + t * (math.log(b[i + 1]) - math.log(b[i]))))
        out["where"] = "interpolated"
        break
    else:
      out["where"] = "beyond the sweep"
  if out["where"] == "beyond the sweep" and limit is not None:
    if out["analytic_batch"] is None:
      out["text"] = (
        f"never at this context: decode intensity tends to {limit:.3g} FLOPs/byte as the batch "
        f"grows (the KV cache read grows with it), below the ridge {ridge:.3g}; decode stays "
        "memory-bound"
      )
    else:
      out["text"] = (
        f"beyond the sweep (largest batch {int(b[-1])}, intensity {x[-1]:.3g}); the analytic "
        f"count reaches the ridge {ridge:.3g} at batch {out['analytic_batch']:.0f}"
      )
  elif out["where"] == "beyond the sweep":
    out["text"] = (
      f"beyond the sweep: intensity {x[-1]:.3g} at batch {int(b[-1])} < ridge {ridge:.3g}"
    )
  elif out["where"] == "interpolated":
    out["text"] = f"decode turns compute-bound at batch {out['batch']:.3g} (ridge {ridge:.3g})"
  else:
    out["text"] = f"decode is compute-bound from batch {int(b[0])} (ridge {ridge:.3g})"
  return out


def best_decode(points: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
  """The decode point of most tokens/s."""
  return max((p for p in points if p["phase"] == "decode"), key=lambda p: p["tokens_per_s"])


# ----------------------------------------------------------------------------------------------
# Figures


def plot_roofline(points: Sequence[Mapping[str, Any]], peaks: Mapping[str, Any], path: str) -> None:
  """`roofline_figure` as a PNG at `path`, SVG and PDF beside it."""
  from research.bench.figures import save_figure

  save_figure(roofline_figure(points, peaks), path)


def plot_decode_sweep(points: Sequence[Mapping[str, Any]], path: str) -> None:
  """`decode_sweep_figure` as a PNG at `path`, SVG and PDF beside it."""
  from research.bench.figures import save_figure

  save_figure(decode_sweep_figure(points), path)


def roofline_figure(points: Sequence[Mapping[str, Any]], peaks: Mapping[str, Any]):
  """Log-log roofline: the matmul peak and the triad bandwidth (and the cache triad's, dashed),
  each phase's achieved FLOP/s at its intensity (filled) over its bound (hollow)."""
  from research.bench.figures import _style, plt, si  # (figures sets the Agg backend)

  peak, bw, ridge = (
    peaks["matmul_flops_per_s"],
    peaks["triad_bytes_per_s"],
    peaks["ridge_flops_per_byte"],
  )
  xs = [p["intensity"] for p in points] + [ridge]
  lo, hi = min(xs) / 4, max(xs) * 4
  grid = np.geomspace(lo, hi, 200)
  fig, ax = plt.subplots(figsize=(7.5, 5))
  ax.plot(
    grid,
    np.minimum(peak, grid * bw),
    color="k",
    lw=1.5,
    label=f"roof: {si(bw, 'B/s')} triad (DRAM), {si(peak, 'FLOP/s')} matmul",
  )
  if "cache_triad_bytes_per_s" in peaks:
    cbw = peaks["cache_triad_bytes_per_s"]
    ax.plot(
      grid,
      np.minimum(peak, grid * cbw),
      color="0.5",
      lw=1,
      ls="--",
      label=f"roof: {si(cbw, 'B/s')} triad in L3",
    )
  ax.axvline(ridge, color="0.6", lw=0.8, ls=":")
  ax.text(ridge, peak * 1.15, f"ridge {ridge:.3g} FLOP/B", ha="center", fontsize=8)
  markers = {"train step": "s", "prefill": "^", "decode": "o"}
  decode = sorted((p for p in points if p["phase"] == "decode"), key=lambda p: p["batch"])
  cmap = plt.get_cmap("viridis")
  for p in points:
    if p["phase"] == "decode":
      i = decode.index(p)
      color = cmap(i / max(1, len(decode) - 1))
      label = f"decode, batch {p['batch']}"
    else:
      color = "C3" if p["phase"] == "train step" else "C1"
      label = f"{p['phase']}, batch {p['batch']}"
    marker = markers.get(p["phase"], "D")
    x, y, top = p["intensity"], p["achieved_flops_per_s"], p["bound_flops_per_s"]
    ax.plot([x, x], [y, top], color=color, lw=0.8, alpha=0.6)
    ax.plot([x], [top], marker=marker, mfc="none", mec=color, ls="", ms=7)
    ax.plot(
      [x],
      [y],
      marker=marker,
      color=color,
      mec="k",
      mew=0.5,
      ls="",
      ms=7,
      label=f"{label}: {100 * p['fraction']:.0f} % of bound",
    )
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlim(lo, hi)
  _style(
    ax,
    "arithmetic intensity, FLOPs per byte moved (log scale)",
    "roofline per phase (filled: achieved, hollow: bound)",
  )
  ax.set_ylabel("FLOP/s (log scale)")
  ax.legend(fontsize=7, loc="lower right", frameon=False)
  fig.tight_layout()
  return fig


def decode_sweep_figure(points: Sequence[Mapping[str, Any]]):
  """Decode tokens/s against batch, and MFU and the fraction of the roofline bound against
  batch (50 % drawn)."""
  from matplotlib.ticker import FuncFormatter

  from research.bench.figures import _style, plt

  decode = sorted((p for p in points if p["phase"] == "decode"), key=lambda p: p["batch"])
  b = np.array([p["batch"] for p in decode], float)
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
  left.plot(b, [p["tokens_per_s"] / 1e3 for p in decode], marker="o", color="C0")
  best = best_decode(decode)
  left.plot(
    [best["batch"]],
    [best["tokens_per_s"] / 1e3],
    marker="*",
    ms=13,
    mec="k",
    color="C0",
    ls="",
    label=f"best: batch {best['batch']}",
  )
  left.set_ylim(bottom=0)
  left.set_ylabel("thousand tokens / s (linear)")
  left.legend(fontsize=8, frameon=False)
  _style(left, "decode slots (log₂ scale)", "decode throughput, every slot busy")
  right.plot(
    b,
    [100 * p["roofline_fraction"] for p in decode],
    marker="o",
    color="C2",
    label="of its roofline bound (DRAM triad)",
  )
  if all("cache_fraction" in p for p in decode):
    right.plot(
      b,
      [100 * p["cache_fraction"] for p in decode],
      marker="o",
      ls="--",
      color="C2",
      alpha=0.6,
      label="of the L3-triad bound",
    )
  right.plot(
    b, [100 * p["mfu"] for p in decode], marker="s", color="C1", label="MFU (of the matmul peak)"
  )
  right.axhline(50, color="0.5", lw=0.8, ls=":")
  right.set_ylim(bottom=0)
  right.set_ylabel("% (linear)")
  right.legend(fontsize=8, frameon=False)
  _style(right, "decode slots (log₂ scale)", "utilization")
  for ax in (left, right):
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
  fig.tight_layout()
  return fig
