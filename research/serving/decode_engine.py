"""Continuous batching for any decoder model: a fixed set of decode slots, each at its own position.

The split LLM servers use (JetStream's engine API; vLLM's scheduler works alike):

  prefill(request) -> Prefix   the prompt's keys/values (padded to a length bucket), its first
                               token and true length; compiled once per prompt-length bucket
  insert(prefix, slot)         writes the prefix into one slot of the decode state (compiled once
                               per bucket, the state donated so XLA updates it in place)
  generate() -> tokens [slots] ONE compiled step over every slot, each at its own position
  free(slot)                   the slot's request is done; the next one may be inserted there

`Scheduler` (and `serve`, which drives it over a list of requests) puts requests through them:
continuous batching inserts a waiting request as soon as a slot frees; static batching, the
baseline on the same engine, waits for a full batch and runs it to its longest request.

Decode cost follows the real context: each step scores only the cache's first L positions, L the
smallest of `decode_buckets` above every active slot's position (one executable per bucket), so a
batch of short sequences does not pay for n_ctx. Every shape is fixed at `warmup()`, which
compiles every bucket ahead of time and reports the seconds (and drops a decode bucket that ran
no faster than a larger one); `compilations_after_warmup` counts the process's compilations
since (0 in steady state). `for_serving(model)` picks the cache layout batched decoding reads
fastest; `kv_cache_bytes` and `max_slots` give the memory side.

Sampling is per request: greedy at temperature 0, else the i-th new token is drawn with
`fold_in(key, i)`, as `Generator.generate` does at batch 1, so a request's tokens do not depend
on its slot, its neighbours or when it ran.

The model needs a `decode(tokens_BxS, cache, start_pos, key_len=None)` method that takes one
start position per row (`start_pos` of shape [B]) and scores only cache positions < `key_len`,
`n_ctx` and `num_classes` fields, and a cache builder in `research.models.CACHE_BUILDERS` whose
buffers have the batch first and one axis of n_ctx positions (the Transformer's are [B, n_ctx,
heads, head width], or [B, heads, n_ctx, head width] with cache_layout="BHTD").
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
import time
from typing import Any, Callable, Hashable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from research.models import init_decode_cache, tree_bytes
from research.serving.generate import GenerationError

CONSTANT_PARAMS_MAX_BYTES = 16 * 2**20  # larger models keep params as arguments (see Predictor)

# ----------------------------------------------------------------------------------------------
# Compilations, counted for the whole process: an engine compiles everything at warm-up, and any
# compilation after that (of anything) is a stall a served request would see.

_compile_count = 0
_listener_lock = threading.Lock()
_listening = False


def _on_event(name: str, *_: Any, **__: Any) -> None:
  global _compile_count
  if "backend_compile" in name:
    with _listener_lock:
      _compile_count += 1


def backend_compiles() -> int:
  """How many XLA compilations this process has run since the first engine was built."""
  return _compile_count


def _listen_for_compiles() -> None:
  global _listening
  with _listener_lock:
    if not _listening:
      jax.monitoring.register_event_duration_secs_listener(_on_event)
      _listening = True


# ----------------------------------------------------------------------------------------------
# Memory


def kv_cache_bytes(model: Any) -> dict[str, int]:
  """KV-cache bytes of `model`'s decode cache: per token of context and per slot (n_ctx tokens).

  Read from the shapes its registered cache builder makes, so it holds for any decoder model
  (for the Transformer: n_layer x 2 (k, v) x d_model x bytes per element, per token).
  """
  shapes = jax.eval_shape(lambda: init_decode_cache(model, 1))
  per_slot = int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes)))
  return {"per_token": per_slot // model.n_ctx, "per_slot": per_slot, "n_ctx": int(model.n_ctx)}


def max_slots(model: Any, budget_bytes: int, params: Any = None) -> int:
  """How many sequences of up to n_ctx tokens fit at once in `budget_bytes` of memory, after the
  params (when given): each slot holds a whole context's keys and values."""
  free = int(budget_bytes) - (tree_bytes(params) if params is not None else 0)
  return max(0, free // kv_cache_bytes(model)["per_slot"])


def for_serving(model: Any) -> Any:
  """`model` with its KV cache laid out for batched decoding, where the model offers a choice.

  The Transformer's default cache is [B, n_ctx, heads, Dh] (what training-era code and the ONNX
  export expect); with cache_layout="BHTD" ([B, heads, n_ctx, Dh]) attention reads each head's
  keys in place instead of transposing the cache every step. Same params, same math. Measured
  on lm_markov_tiny's shape, one core: decode tokens/s at 128 slots about 1.7x (65-80k -> 120k).
  """
  if "cache_layout" in getattr(model, "__dataclass_fields__", {}):
    return model.clone(cache_layout="BHTD")
  return model


# ----------------------------------------------------------------------------------------------
# Requests


@dataclasses.dataclass(frozen=True)
class Request:
  """One generation request.

  `key` (a JAX key, or an int seed for `jax.random.key`) is needed when temperature > 0: the i-th
  new token is sampled with fold_in(key, i). Generation ends after `max_new_tokens` tokens, or at
  the first token in `stop_tokens` (which is returned).
  """

  id: Hashable
  prompt: Sequence[int]
  max_new_tokens: int
  temperature: float = 0.0
  key: Any = None
  stop_tokens: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class Prefix:
  """A prefilled prompt, ready to insert: its keys/values (each cache buffer's first `bucket`
  positions, batch 1), its first token and true length, and the request's sampling state."""

  kv: Any
  first_token: int
  length: int
  bucket: int
  key_data: np.ndarray
  temperature: float


class DecodeState(NamedTuple):
  """Everything a decode step reads, one row per slot: the cache buffers (slots first), the
  position the slot's next token is written at, that token, its index among the request's new
  tokens (for sampling), the request's key data and temperature."""

  cache: Any
  pos_B: jax.Array
  token_B: jax.Array
  index_B: jax.Array
  key_data_B: jax.Array
  temperature_B: jax.Array


def _buckets(name: str, buckets: Sequence[int] | None, n_ctx: int, smallest: int) -> tuple:
  if buckets is None:
    out, b = [], min(smallest, n_ctx)
    while b < n_ctx:
      out.append(b)
      b *= 2
    return (*out, n_ctx)
  out = tuple(sorted({int(b) for b in buckets}))
  if not out or out[0] < 1 or out[-1] > n_ctx:
    raise GenerationError(
      f"{name} must be lengths in [1, n_ctx={n_ctx}], got {list(buckets)}; "
      f"give e.g. {name}=({min(smallest, n_ctx)}, ..., {n_ctx})"
    )
  return out


def _time_axes(model: Any) -> Any:
  """Per cache buffer, its positions' axis: the one that grows with n_ctx."""
  one = jax.eval_shape(lambda: init_decode_cache(model, 1))
  longer = jax.eval_shape(lambda: init_decode_cache(model.clone(n_ctx=model.n_ctx + 1), 1))

  def axis(a, b):
    grown = [i for i, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y]
    if len(grown) != 1 or a.shape[0] != 1:
      raise GenerationError(
        f"{type(model).__name__}'s decode cache must be [batch, ...] with one axis of n_ctx "
        f"positions, got {a.shape}"
      )
    return grown[0]

  return jax.tree.map(axis, one, longer)


def _sample_rows(logits_BxV, temperature_B, key_data_B, index_B):
  """Per row: argmax at temperature 0, else categorical(fold_in(key, index), logits / t), drawn
  exactly as `Generator.next_token` draws a batch of one. Sampling is skipped when no row
  samples."""
  greedy_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)

  def sampled():
    def one(logits_V, t, key_data, i):
      key = jax.random.fold_in(jax.random.wrap_key_data(key_data), i)
      return jax.random.categorical(key, logits_V[None] / t, axis=-1)[0].astype(jnp.int32)

    safe_t = jnp.where(temperature_B > 0, temperature_B, 1.0)
    drawn_B = jax.vmap(one)(logits_BxV, safe_t, key_data_B, index_B)
    return jnp.where(temperature_B > 0, drawn_B, greedy_B)

  return lax.cond(jnp.any(temperature_B > 0), sampled, lambda: greedy_B)


# ----------------------------------------------------------------------------------------------


class DecodeEngine:
  """A decoder model served from `slots` decode slots, every shape compiled at `warmup()`.

  prefill_buckets: prompt lengths compiled for prefill (a prompt pads up to the next one);
    default powers of two from 16 up to n_ctx, and n_ctx.
  decode_buckets: how many cache positions a decode step scores (the next one above every active
    slot's position); default as prefill_buckets. `(n_ctx,)` scores the whole cache every step.
  memory_budget_bytes: refuse slot counts whose KV cache, with the params, does not fit.
  params_as_constants: compile the params into the executables (default for models up to 16 MiB:
    XLA folds weight-only work, and each call passes one argument less).
  prune_decode_buckets: at warm-up, time each decode bucket's step and drop any that is not faster
    than a larger one (then `decode_buckets` lists the kept ones, `decode_step_seconds` all).
  prefill_batch: the most waiting prompts of one prefill bucket that `prefill_insert` runs in one
    call and writes into their slots (compiled for 1, 2, 4, ... up to it, per bucket; a call pads
    to the next size by repeating its first row). Measured on lm_markov_tiny's shape, one core: a
    prefill of one 8- to 32-token prompt and its insert took 230-320 us, as long as decoding a
    whole mean-length request at 64 slots: 55-60 % of serving time went to prefill and insert.
    Measured on one CPU core at 128 slots, lm_markov_tiny's shape with the BHTD cache: steps over
    16, 32, 64, 96, 128 positions took 544, 658, 976, 1710, 811 us; the sliced cache is copied,
    and past about n_ctx/4 the copy costs more than scoring the whole cache in place.
  """

  def __init__(
    self,
    model: Any,
    params: Any,
    slots: int,
    prefill_buckets: Sequence[int] | None = None,
    decode_buckets: Sequence[int] | None = None,
    memory_budget_bytes: int | None = None,
    params_as_constants: bool | None = None,
    prune_decode_buckets: bool = True,
    device: jax.Device | None = None,
    prefill_batch: int = 1,
  ):
    if not isinstance(slots, (int, np.integer)) or slots < 1:
      raise GenerationError(f"slots must be a positive int, got {slots!r}")
    self.model = model
    self.slots = int(slots)
    self.n_ctx = int(model.n_ctx)
    self.vocab = int(model.num_classes)
    self.kv_bytes = kv_cache_bytes(model)
    if memory_budget_bytes is not None:
      fit = max_slots(model, memory_budget_bytes, params)
      if self.slots > fit:
        need = self.slots * self.kv_bytes["per_slot"] + tree_bytes(params)
        raise GenerationError(
          f"{self.slots} slots need {need / 2**20:.2f} MiB (params and a "
          f"{self.kv_bytes['per_slot'] / 2**10:.1f} KiB KV cache per slot) but the memory "
          f"budget is {memory_budget_bytes / 2**20:.2f} MiB, which holds {fit}; "
          f"use at most {fit} slots or raise the memory budget"
        )
    self.prefill_buckets = _buckets("prefill_buckets", prefill_buckets, self.n_ctx, 16)
    self.decode_buckets = _buckets("decode_buckets", decode_buckets, self.n_ctx, 16)
    if self.decode_buckets[-1] != self.n_ctx:
      self.decode_buckets = (*self.decode_buckets, self.n_ctx)  # a slot may reach any position
    self.prune_decode_buckets = bool(prune_decode_buckets)
    if not isinstance(prefill_batch, (int, np.integer)) or prefill_batch < 1:
      raise GenerationError(f"prefill_batch must be a positive int, got {prefill_batch!r}")
    self.prefill_batch = int(min(prefill_batch, self.slots))
    self.prefill_batch_sizes = tuple(
      sorted({*(2**i for i in range(self.prefill_batch.bit_length()) if 2**i <= self.prefill_batch),
              self.prefill_batch})
    )  # fmt: skip
    self.decode_step_seconds: dict[int, float] = {}
    self.device = device or jax.devices()[0]
    self.params = jax.device_put(params, self.device)
    if params_as_constants is None:
      params_as_constants = tree_bytes(params) <= CONSTANT_PARAMS_MAX_BYTES
    self.params_as_constants = bool(params_as_constants)
    self._t_axes = _time_axes(model)
    self._key_shape = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape
    self._prefill_exe: dict[int, Any] = {}
    self._insert_exe: dict[int, Any] = {}
    self._prefill_insert_exe: dict[tuple[int, int], Any] = {}  # (bucket, rows) ->
    self._generate_exe: dict[int, Any] = {}
    self.compile_seconds: dict[str, dict[int, float]] = {}
    self._compiles_at_warmup: int | None = None
    self._state: DecodeState | None = None
    # Host bookkeeping, kept to a few Python ints per step (numpy calls cost microseconds, a
    # batch-1 step about 60): every active slot advances one position per step, so a slot's
    # position is its offset plus the step count, and the largest is the largest offset's.
    self._offset: dict[int, int] = {}  # active slot -> its position minus self._steps
    self._steps = 0
    self._top_offset: int | None = None  # max of _offset's values; None: to recompute
    # Cache positions a step must score -> the decode bucket that holds them.
    self._bucket_of = [
      self.bucket_for(max(n, 1), self.decode_buckets) for n in range(self.n_ctx + 1)
    ]
    _listen_for_compiles()

  # -- the computations, traced once per bucket ------------------------------------------------

  def _empty_state(self) -> DecodeState:
    s = self.slots
    return DecodeState(
      init_decode_cache(self.model, s),
      jnp.zeros(s, jnp.int32),
      jnp.zeros(s, jnp.int32),
      jnp.zeros(s, jnp.int32),
      jnp.zeros((s, *self._key_shape), jnp.uint32),
      jnp.zeros(s, jnp.float32),
    )

  def _trace_prefill(self, params, prompt_1xP, length, key_data, temperature):
    bucket = prompt_1xP.shape[1]
    cache = init_decode_cache(self.model, 1)
    logits_1xPxV, cache = self.model.apply(
      params, prompt_1xP, cache, 0, key_len=bucket, method="decode"
    )
    # Pad tokens sit after the prompt: causal attention keeps them out of its logits.
    logits_1xV = lax.dynamic_index_in_dim(logits_1xPxV[0], length - 1, keepdims=True)
    first = _sample_rows(logits_1xV, temperature[None], key_data[None], jnp.zeros(1, jnp.int32))
    kv = jax.tree.map(
      lambda x, axis: lax.slice_in_dim(x, 0, bucket, axis=axis), cache, self._t_axes
    )
    return kv, first[0]

  def _trace_insert(self, state: DecodeState, kv, slot, length, token, key_data, temperature):
    def write(buffer, rows):
      return lax.dynamic_update_slice(
        buffer, rows.astype(buffer.dtype), (slot,) + (0,) * (buffer.ndim - 1)
      )

    return DecodeState(
      jax.tree.map(write, state.cache, kv),
      state.pos_B.at[slot].set(length),
      state.token_B.at[slot].set(token),
      state.index_B.at[slot].set(1),
      state.key_data_B.at[slot].set(key_data),
      state.temperature_B.at[slot].set(temperature),
    )

  def _trace_prefill_insert(self, params, state: DecodeState, prompt_KxP, length_K, slot_K,
                            key_data_K, temperature_K):  # fmt: skip
    """K prompts of one bucket prefilled in one call, each written into its slot (the rows of a
    padded call repeat row 0, slot included: the same write twice)."""
    rows, bucket = prompt_KxP.shape
    cache = init_decode_cache(self.model, rows)
    logits_KxPxV, cache = self.model.apply(
      params, prompt_KxP, cache, 0, key_len=bucket, method="decode"
    )
    last_K = jnp.clip(length_K - 1, 0, bucket - 1)
    logits_KxV = jnp.take_along_axis(logits_KxPxV, last_K[:, None, None], axis=1)[:, 0]
    first_K = _sample_rows(logits_KxV, temperature_K, key_data_K, jnp.zeros(rows, jnp.int32))
    kv = jax.tree.map(
      lambda x, axis: lax.slice_in_dim(x, 0, bucket, axis=axis), cache, self._t_axes
    )

    def write(buffer, rows_):
      for i in range(rows):  # unrolled: K is static
        row = lax.dynamic_slice_in_dim(rows_, i, 1, axis=0).astype(buffer.dtype)
        buffer = lax.dynamic_update_slice(buffer, row, (slot_K[i],) + (0,) * (buffer.ndim - 1))
      return buffer

    new = DecodeState(
      jax.tree.map(write, state.cache, kv),
      state.pos_B.at[slot_K].set(length_K),
      state.token_B.at[slot_K].set(first_K),
      state.index_B.at[slot_K].set(1),
      state.key_data_B.at[slot_K].set(key_data_K),
      state.temperature_B.at[slot_K].set(temperature_K),
    )
    return new, first_K

  def _trace_generate(self, params, state: DecodeState, key_len: int):
    logits_Bx1xV, cache = self.model.apply(
      params, state.token_B[:, None], state.cache, state.pos_B, key_len=key_len, method="decode"
    )
    token_B = _sample_rows(logits_Bx1xV[:, 0], state.temperature_B, state.key_data_B, state.index_B)
    # Free slots keep stepping (the shapes are fixed); clamping keeps them inside the cache.
    pos_B = jnp.minimum(state.pos_B + 1, self.n_ctx - 1)
    new = DecodeState(
      cache, pos_B, token_B, state.index_B + 1, state.key_data_B, state.temperature_B
    )
    return token_B, new

  # -- warm-up ---------------------------------------------------------------------------------

  def warmup(self) -> dict[str, dict[int, float]]:
    """Compiles every bucket's prefill, insert and decode step ahead of time; seconds per bucket.

    Also allocates the decode state and runs each once, so the first served request pays for no
    first-call work. Calling it again does nothing.
    """
    if self._compiles_at_warmup is not None:
      return self.compile_seconds
    sharding = jax.sharding.SingleDeviceSharding(self.device)
    spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)  # noqa: E731
    i32 = jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding)
    f32 = jax.ShapeDtypeStruct((), jnp.float32, sharding=sharding)
    key_data = jax.ShapeDtypeStruct(self._key_shape, jnp.uint32, sharding=sharding)
    state = jax.tree.map(spec, jax.eval_shape(self._empty_state))
    params = jax.tree.map(spec, self.params)
    self.compile_seconds = {"prefill": {}, "insert": {}, "generate": {}, "prefill_insert": {}}

    def compile_(kind, bucket, fn, *args, **jit_kw):
      t = time.perf_counter()
      if self.params_as_constants:
        compiled = jax.jit(lambda *a: fn(self.params, *a), **jit_kw).lower(*args).compile()
        call = compiled
      else:
        jit_kw = {k: tuple(i + 1 for i in v) for k, v in jit_kw.items()}
        compiled = jax.jit(fn, **jit_kw).lower(params, *args).compile()
        call = lambda *a, compiled=compiled: compiled(self.params, *a)  # noqa: E731
      self.compile_seconds[kind][bucket] = time.perf_counter() - t
      return call

    for p in self.prefill_buckets:
      prompt = jax.ShapeDtypeStruct((1, p), jnp.int32, sharding=sharding)
      self._prefill_exe[p] = compile_("prefill", p, self._trace_prefill, prompt, i32, key_data, f32)
      kv = jax.tree.map(
        spec, jax.eval_shape(self._trace_prefill, self.params, prompt, i32, key_data, f32)[0]
      )
      t = time.perf_counter()
      self._insert_exe[p] = (
        jax.jit(self._trace_insert, donate_argnums=(0,))
        .lower(state, kv, i32, i32, i32, key_data, f32)
        .compile()
      )
      self.compile_seconds["insert"][p] = time.perf_counter() - t
    if self.prefill_batch > 1:
      for p in self.prefill_buckets:
        for k in self.prefill_batch_sizes:
          prompts = jax.ShapeDtypeStruct((k, p), jnp.int32, sharding=sharding)
          vec = lambda dtype, k=k: jax.ShapeDtypeStruct((k,), dtype, sharding=sharding)  # noqa: E731
          keys = jax.ShapeDtypeStruct((k, *self._key_shape), jnp.uint32, sharding=sharding)
          self._prefill_insert_exe[p, k] = compile_(
            "prefill_insert", f"{k}x{p}", self._trace_prefill_insert, state, prompts,
            vec(jnp.int32), vec(jnp.int32), keys, vec(jnp.float32), donate_argnums=(0,),
          )  # fmt: skip
    for length in self.decode_buckets:
      fn = functools.partial(self._trace_generate, key_len=length)
      self._generate_exe[length] = compile_("generate", length, fn, state, donate_argnums=(0,))
    self._state = jax.device_put(self._empty_state(), self.device)
    self._warm_host_paths()
    self._compiles_at_warmup = backend_compiles()
    return self.compile_seconds

  def _warm_host_paths(self) -> None:
    """Runs every executable once, and the host-side key conversions, so nothing is first-run."""
    key_data = self._key_data(Request("warmup", [0], 1, 1.0, 0))
    self._key_data(Request("warmup", [0], 1, 1.0, jax.random.key(0)))
    for p in self.prefill_buckets:
      prefix = self._run_prefill(np.zeros(1, np.int32), 1, key_data, 1.0, bucket=p)
      self._state = self._insert_exe[p](
        self._state,
        prefix.kv,
        np.int32(0),
        np.int32(1),
        np.int32(prefix.first_token),
        key_data,
        np.float32(1.0),
      )
    for (p, k), exe in self._prefill_insert_exe.items():
      self._state, first = exe(
        self._state,
        np.zeros((k, p), np.int32),
        np.ones(k, np.int32),
        np.zeros(k, np.int32),
        np.zeros((k, *self._key_shape), np.uint32),
        np.ones(k, np.float32),
      )
      np.asarray(first)
    for length in self.decode_buckets:
      seconds = []
      for _ in range(1 + (self.prune_decode_buckets and 9)):
        t = time.perf_counter()
        tokens, self._state = self._generate_exe[length](self._state)
        np.asarray(tokens)
        seconds.append(time.perf_counter() - t)
      self.decode_step_seconds[length] = float(np.median(seconds[1:] or seconds))
    if self.prune_decode_buckets:
      self._prune_decode_buckets()
    self._state = jax.device_put(self._empty_state(), self.device)

  def _prune_decode_buckets(self) -> None:
    """Keeps a decode bucket only if its step ran faster than every larger one's: fewer
    positions can cost more (slicing the cache copies it), and then a slot is better served by
    the larger bucket."""
    kept, fastest = [], float("inf")
    for length in reversed(self.decode_buckets):
      if self.decode_step_seconds[length] < fastest or length == self.n_ctx:
        kept.append(length)
        fastest = min(fastest, self.decode_step_seconds[length])
    self.decode_buckets = tuple(reversed(kept))
    self._generate_exe = {length: self._generate_exe[length] for length in self.decode_buckets}
    self._bucket_of = [
      self.bucket_for(max(n, 1), self.decode_buckets) for n in range(self.n_ctx + 1)
    ]

  @property
  def compilations_after_warmup(self) -> int:
    """XLA compilations anywhere in this process since `warmup()` finished (0 in steady state)."""
    if self._compiles_at_warmup is None:
      raise RuntimeError("call warmup() first")
    return backend_compiles() - self._compiles_at_warmup

  def _ensure_warm(self) -> None:
    if self._compiles_at_warmup is None:
      self.warmup()

  # -- requests ----------------------------------------------------------------------------------

  def check(self, request: Request) -> np.ndarray:
    """The request's prompt as int32, or GenerationError naming what to change."""
    name = f"request {request.id!r}"
    prompt = np.asarray(request.prompt)
    if prompt.ndim != 1 or prompt.size == 0 or not np.issubdtype(prompt.dtype, np.integer):
      raise GenerationError(
        f"{name}: the prompt must be a non-empty list of token ids, got shape {prompt.shape}, "
        f"dtype {prompt.dtype}"
      )
    if prompt.min() < 0 or prompt.max() >= self.vocab:
      raise GenerationError(
        f"{name}: prompt tokens must lie in [0, {self.vocab}) (the model's vocabulary), got "
        f"[{prompt.min()}, {prompt.max()}]; map the text to this model's tokens"
      )
    n = request.max_new_tokens
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
      raise GenerationError(f"{name}: max_new_tokens must be an int >= 1, got {n!r}")
    if prompt.size + n > self.n_ctx:
      raise GenerationError(
        f"{name}: prompt ({prompt.size}) + max_new_tokens ({n}) exceed the model's context "
        f"n_ctx={self.n_ctx}; shorten the prompt or lower max_new_tokens to "
        f"{max(self.n_ctx - prompt.size, 0)}"
      )
    if prompt.size > self.prefill_buckets[-1]:
      raise GenerationError(
        f"{name}: the prompt ({prompt.size} tokens) is longer than the largest prefill bucket "
        f"({self.prefill_buckets[-1]}); add a bucket of at least {prompt.size}"
      )
    if not float(request.temperature) >= 0.0:
      raise GenerationError(f"{name}: temperature must be >= 0 (0 is greedy)")
    if request.temperature > 0 and request.key is None:
      raise GenerationError(f"{name}: sampling at temperature > 0 needs a key (key=seed)")
    stops = np.asarray(request.stop_tokens, np.int64)
    if stops.size and (stops.min() < 0 or stops.max() >= self.vocab):
      raise GenerationError(f"{name}: stop tokens must lie in [0, {self.vocab})")
    return prompt.astype(np.int32)

  def _key_data(self, request: Request) -> np.ndarray:
    key = request.key
    if key is None:
      return np.zeros(self._key_shape, np.uint32)
    if isinstance(key, (int, np.integer)):
      key = jax.random.key(int(key))
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
      key = jax.random.key_data(key)
    return np.asarray(key, np.uint32).reshape(self._key_shape)

  def bucket_for(self, length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `length` positions."""
    return buckets[int(np.searchsorted(buckets, length))]

  # -- the engine API --------------------------------------------------------------------------

  def prefill(self, request: Request) -> Prefix:
    """The request's prompt run once: its padded keys/values and its first token (host int)."""
    self._ensure_warm()
    return self._prefill_checked(self.check(request), request)

  def _prefill_checked(self, prompt: np.ndarray, request: Request) -> Prefix:
    return self._run_prefill(
      prompt, prompt.size, self._key_data(request), float(request.temperature)
    )

  def _run_prefill(self, prompt, length, key_data, temperature, bucket=None) -> Prefix:
    bucket = bucket or self.bucket_for(length, self.prefill_buckets)
    padded = np.zeros((1, bucket), np.int32)
    padded[0, :length] = prompt
    kv, first = self._prefill_exe[bucket](
      padded, np.int32(length), key_data, np.float32(temperature)
    )
    return Prefix(kv, int(first), int(length), bucket, key_data, float(temperature))

  def insert(self, prefix: Prefix, slot: int) -> None:
    """Places `prefix` in free slot `slot`: its next decode step writes position prefix.length."""
    self._ensure_warm()
    if not 0 <= slot < self.slots or slot in self._offset:
      raise ValueError(f"slot {slot} is not a free slot of {self.slots}")
    self._state = self._insert_exe[prefix.bucket](
      self._state,
      prefix.kv,
      np.int32(slot),
      np.int32(prefix.length),
      np.int32(prefix.first_token),
      prefix.key_data,
      np.float32(prefix.temperature),
    )
    self._offset[slot] = prefix.length - self._steps
    self._top_offset = None

  def prefill_insert(self, requests: Sequence[Request], slots: Sequence[int]) -> list[int]:
    """Prefills up to `prefill_batch` requests in one call and places each in its free slot (as
    `prefill` then `insert` would, with the same tokens); returns their first tokens."""
    self._ensure_warm()
    return self._prefill_insert_checked([self.check(r) for r in requests], requests, slots)

  def _prefill_insert_checked(
    self, prompts: Sequence[np.ndarray], requests: Sequence[Request], slots: Sequence[int]
  ) -> list[int]:
    n = len(requests)
    if not 1 <= n <= self.prefill_batch or len(slots) != n or len(prompts) != n:
      raise ValueError(f"prefill_insert takes 1 to {self.prefill_batch} requests, one slot each")
    for slot in slots:
      if not 0 <= slot < self.slots or slot in self._offset:
        raise ValueError(f"slot {slot} is not a free slot of {self.slots}")
    bucket = self.bucket_for(max(p.size for p in prompts), self.prefill_buckets)
    k = self.bucket_for(n, self.prefill_batch_sizes)
    order = list(range(n)) + [0] * (k - n)  # padding repeats row 0
    padded = np.zeros((k, bucket), np.int32)
    for row, i in enumerate(order):
      padded[row, : prompts[i].size] = prompts[i]
    lengths = np.array([prompts[i].size for i in order], np.int32)
    slot_k = np.array([slots[i] for i in order], np.int32)
    keys = np.stack([self._key_data(requests[i]) for i in order])
    temps = np.array([float(requests[i].temperature) for i in order], np.float32)
    self._state, first = self._prefill_insert_exe[bucket, k](
      self._state, padded, lengths, slot_k, keys, temps
    )
    for i in range(n):
      self._offset[slots[i]] = int(lengths[i]) - self._steps
    self._top_offset = None
    return np.asarray(first)[:n].tolist()

  def generate(self) -> np.ndarray:
    """One decode step of every slot: the next token of each [slots] (free slots' are junk).

    Scores the smallest decode bucket that holds every active slot's position.
    """
    self._ensure_warm()
    if self._top_offset is None:
      self._top_offset = max(self._offset.values(), default=-self._steps)
    top = self._top_offset + self._steps  # the largest position this step writes
    if top >= self.n_ctx:
      raise GenerationError(
        f"a slot has reached the end of the context (n_ctx={self.n_ctx}); free it first"
      )
    tokens, self._state = self._generate_exe[self._bucket_of[top + 1]](self._state)
    self._steps += 1
    return np.asarray(tokens)

  def free(self, slot: int) -> None:
    """Marks `slot` free: its request is done and a new prefix may be inserted there."""
    if self._offset.pop(slot, None) is not None:
      self._top_offset = None

  def free_slots(self) -> list[int]:
    return [s for s in range(self.slots) if s not in self._offset]

  def active_slots(self) -> list[int]:
    return sorted(self._offset)

  def position(self, slot: int) -> int:
    """The position the active slot's next token is written at (its context length so far)."""
    return self._offset[slot] + self._steps


# ----------------------------------------------------------------------------------------------
# Scheduling


@dataclasses.dataclass
class Completion:
  """A request's tokens and times (in the scheduler's clock): arrival, first token, last token."""

  id: Hashable
  tokens: list[int]
  arrival_s: float
  first_token_s: float | None = None
  done_s: float | None = None
  slot: int | None = None
  finish_reason: str | None = None  # "length" or "stop"


TokenCallback = Callable[[Hashable, int, float], None]
DoneCallback = Callable[[Hashable, list, float], None]


class Scheduler:
  """Puts requests through a `DecodeEngine`, continuously or in static batches.

  continuous: before each decode step every free slot takes the next waiting request (prefill,
    then insert); a slot frees the moment its request ends.
  static: waits for `engine.slots` requests (or `close()`, or `static_wait_s` since the oldest
    arrived), runs them to the longest, then takes the next batch. Each request's tokens still
    stream, and it completes at its own last token: the baseline loses only what waiting costs.

  Requests may be added from another thread (`add_request`) while one thread calls `step()`,
  as a LoadGen system under test does. Callbacks get (id, token, t) for the first token and each
  later one, and (id, tokens, t) when a request is done, t from `clock`.
  `max_prefills_per_step` (continuous only) bounds how many prompts run between two decode steps
  (the running requests' token gaps grow with it); None lets every free slot fill at once.
  """

  def __init__(
    self,
    engine: DecodeEngine,
    mode: str = "continuous",
    clock: Callable[[], float] = time.perf_counter,
    on_first_token: TokenCallback | None = None,
    on_token: TokenCallback | None = None,
    on_done: DoneCallback | None = None,
    static_wait_s: float | None = None,
    max_prefills_per_step: int | None = None,
  ):
    if mode not in ("continuous", "static"):
      raise GenerationError(f"unknown batching mode {mode!r}; choose continuous or static")
    self.engine = engine
    self.mode = mode
    self.clock = clock
    self.on_first_token = on_first_token
    self.on_token = on_token
    self.on_done = on_done
    self.static_wait_s = static_wait_s
    self.max_prefills_per_step = max_prefills_per_step
    self.results: dict[Hashable, Completion] = {}
    self._waiting: collections.deque[tuple[Request, np.ndarray]] = collections.deque()
    self._lock = threading.Lock()
    self._arrived = threading.Event()
    self._closed = False
    self._running: dict[int, Request] = {}  # slot -> request
    self._in_batch = 0  # static: requests of the current batch not yet done
    engine.warmup()

  def add_request(self, request: Request, arrival_s: float | None = None) -> None:
    """Queues `request` (checked at once: a bad one raises GenerationError and is not queued)."""
    prompt = self.engine.check(request)
    with self._lock:
      if request.id in self.results:
        raise GenerationError(f"request id {request.id!r} was already added; ids must be unique")
      t = self.clock() if arrival_s is None else arrival_s
      self.results[request.id] = Completion(request.id, [], t)
      self._waiting.append((request, prompt))
    self._arrived.set()

  def wait_for_request(self, timeout: float | None = None) -> bool:
    """Blocks until a request is added (or `timeout` seconds pass): what a serving loop does
    when `step()` found nothing to do. True if one came."""
    came = self._arrived.wait(timeout)
    self._arrived.clear()
    return came

  def close(self) -> None:
    """No more requests will come: static batching runs a last, partial batch."""
    self._closed = True

  @property
  def waiting(self) -> int:
    return len(self._waiting)

  @property
  def running(self) -> int:
    return len(self._running)

  @property
  def idle(self) -> bool:
    """Nothing waiting and nothing running."""
    return not self._waiting and not self._running

  def step(self) -> bool:
    """Admits what it may, then runs one decode step; False when there was nothing to do."""
    admitted = self._admit()
    if not self._running:
      return admitted
    tokens = self.engine.generate()
    t = self.clock()
    for slot, request in list(self._running.items()):
      self._emit(request, int(tokens[slot]), t, slot)
    return True

  def _admit(self) -> bool:
    engine = self.engine
    if self.mode == "static":
      if self._in_batch:
        return False
      with self._lock:
        n = len(self._waiting)
        oldest = self.results[self._waiting[0][0].id].arrival_s if n else None
      full = n >= engine.slots
      timed_out = (
        n and self.static_wait_s is not None and self.clock() - oldest >= self.static_wait_s
      )
      if not (full or (n and self._closed) or timed_out):
        return False
      budget = min(n, engine.slots)
      self._in_batch = budget
    else:
      budget = len(engine.free_slots())
      if self.max_prefills_per_step is not None:
        budget = min(budget, self.max_prefills_per_step)
    if engine.prefill_batch > 1:
      return self._admit_batched(budget)
    admitted = False
    for _ in range(budget):
      with self._lock:
        if not self._waiting:
          break
        request, prompt = self._waiting.popleft()
      admitted = True
      prefix = engine._prefill_checked(prompt, request)
      t = self.clock()
      if self._emit(request, prefix.first_token, t, None):
        slot = engine.free_slots()[0]
        self.results[request.id].slot = slot
        engine.insert(prefix, slot)
        self._running[slot] = request
    return admitted

  def _admit_batched(self, budget: int) -> bool:
    """Takes up to `budget` waiting requests and prefills them in calls of up to the engine's
    `prefill_batch`, each call one prefill bucket (the oldest request's first)."""
    engine = self.engine
    with self._lock:
      taken = [self._waiting.popleft() for _ in range(min(budget, len(self._waiting)))]
    groups: dict[int, list] = {}
    for request, prompt in taken:
      groups.setdefault(engine.bucket_for(prompt.size, engine.prefill_buckets), []).append(
        (request, prompt)
      )
    for group in groups.values():
      for i in range(0, len(group), engine.prefill_batch):
        chunk = group[i : i + engine.prefill_batch]
        slots = engine.free_slots()[: len(chunk)]
        requests = [r for r, _ in chunk]
        firsts = engine._prefill_insert_checked([p for _, p in chunk], requests, slots)
        t = self.clock()
        for request, slot, token in zip(requests, slots, firsts):
          self.results[request.id].slot = slot
          self._running[slot] = request
          self._emit(request, token, t, slot)  # done at its first token: _emit frees the slot
    return bool(taken)

  def _emit(self, request: Request, token: int, t: float, slot: int | None) -> bool:
    """Records one token; True while the request goes on."""
    done = self.results[request.id]
    done.tokens.append(token)
    first = len(done.tokens) == 1
    if first:
      done.first_token_s = t
      if self.on_first_token:
        self.on_first_token(request.id, token, t)
    elif self.on_token:
      self.on_token(request.id, token, t)
    if token in request.stop_tokens:
      done.finish_reason = "stop"
    elif len(done.tokens) >= request.max_new_tokens:
      done.finish_reason = "length"
    else:
      return True
    done.done_s = t
    if slot is not None:
      self.engine.free(slot)
      del self._running[slot]
    if self.mode == "static":
      self._in_batch -= 1
    if self.on_done:
      self.on_done(request.id, done.tokens, t)
    return False


def serve(
  engine: DecodeEngine,
  requests: Sequence[Request],
  mode: str = "continuous",
  arrival_s: Sequence[float] | None = None,
  clock: Callable[[], float] = time.perf_counter,
  sleep: Callable[[float], None] = time.sleep,
  on_first_token: TokenCallback | None = None,
  on_token: TokenCallback | None = None,
  on_done: DoneCallback | None = None,
  **scheduler_kw: Any,
) -> dict[Hashable, Completion]:
  """Serves `requests` to the end; each arrives `arrival_s[i]` seconds after the start (all at
  once when None). Returns each request's `Completion`, by id, times relative to the start."""
  requests = list(requests)
  arrivals = np.zeros(len(requests)) if arrival_s is None else np.asarray(arrival_s, float)
  if arrivals.shape != (len(requests),):
    raise GenerationError(f"{len(arrivals)} arrival times for {len(requests)} requests")
  for r in requests:  # every request checked before any runs
    engine.check(r)
  scheduler = Scheduler(engine, mode, clock, on_first_token, on_token, on_done, **scheduler_kw)
  order = np.argsort(arrivals, kind="stable")
  t0 = clock()
  i = 0
  while True:
    now = clock() - t0
    while i < len(order) and arrivals[order[i]] <= now:
      scheduler.add_request(requests[order[i]], t0 + arrivals[order[i]])
      i += 1
    if i == len(order):
      scheduler.close()
    if scheduler.step():
      continue
    if i == len(order) and scheduler.idle:
      break
    if i < len(order):
      sleep(max(0.0, min(arrivals[order[i]] - now, 1e-3)))
  for c in scheduler.results.values():
    c.arrival_s -= t0
    c.first_token_s = None if c.first_token_s is None else c.first_token_s - t0
    c.done_s = None if c.done_s is None else c.done_s - t0
  return scheduler.results
