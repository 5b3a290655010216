"""Continuous batching with the prefill and decode step in ONNX Runtime: `DecodeEngine`'s
interface (check, prefill, insert, generate, free, warmup), so `Scheduler` and `serve` drive it.

What fits, and what does not: the decode step is exported per slot count with one position per
slot (`export_slot_decode_onnx`: `pos` [slots], each row's keys scattered to its own position),
so slots at different positions share a step as in the jax engine; the batch-1 export with one
scalar position (`export_decode_step_onnx`) could serve only lockstep batches. ONNX has no
buffer donation: each step reads the cache from one set of host buffers and writes the next
into a second (both bound once through IO binding, swapped every step), so nothing is allocated
per step, but the whole cache is written every step where XLA updates it in place. Decoding is
greedy only: sampling's per-request keys (fold_in) are JAX's, and a request at temperature > 0
is refused with a line saying to use the jax engine.

Shapes are fixed when the engine is built (`warmup()`): one prefill model per prompt-length
bucket and one decode model per decode bucket (the cache positions a step scores), each an
ONNX Runtime session with one thread by default. Nothing compiles after, so
`compilations_after_warmup` is 0.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from research.serving.decode_engine import (
  DecodeEngine,
  Prefix,
  Request,
  _buckets,
  _time_axes,
  kv_cache_bytes,
)
from research.serving.generate import GenerationError


class OnnxDecodeEngine:
  """A decoder model served from `slots` decode slots by ONNX Runtime, greedy.

  prefill_buckets: prompt lengths exported for prefill (a prompt pads up to the next one);
    default powers of two from 16 up to n_ctx, and n_ctx.
  decode_buckets: how many cache positions a decode step scores (the next one above every active
    slot's position); default as prefill_buckets, one export and session each. Give the model
    `for_serving(model)` (the BHTD cache), as for the jax engine. Measured roughly (one core, a
    shared machine), lm_markov_tiny's shape at 128 slots: a step took 6.8 ms with the BTHD cache
    scoring all of it, 4.6 ms with BHTD, 3.6 ms with BHTD and buckets (32 slots: 1.6, 0.85, 0.77).
  threads: ONNX Runtime's intra-op threads (default: one when XLA is pinned to one, as ours).
  """

  def __init__(
    self,
    model: Any,
    params: Any,
    slots: int,
    prefill_buckets: Sequence[int] | None = None,
    decode_buckets: Sequence[int] | None = None,
    threads: int | None = None,
  ):
    if not isinstance(slots, (int, np.integer)) or slots < 1:
      raise GenerationError(f"slots must be a positive int, got {slots!r}")
    self.model, self.params = model, params
    self.slots = int(slots)
    self.n_ctx = int(model.n_ctx)
    self.vocab = int(model.num_classes)
    self.kv_bytes = kv_cache_bytes(model)
    self.prefill_buckets = _buckets("prefill_buckets", prefill_buckets, self.n_ctx, 16)
    self.decode_buckets = _buckets("decode_buckets", decode_buckets, self.n_ctx, 16)
    if self.decode_buckets[-1] != self.n_ctx:
      self.decode_buckets = (*self.decode_buckets, self.n_ctx)
    self.threads = threads
    self.prefill_batch = 1  # one prompt a prefill call (the Scheduler asks)
    self._t_axes = [int(a) for a in _leaves(_time_axes(model))]
    self._bucket_of = [
      self.bucket_for(max(n, 1), self.decode_buckets) for n in range(self.n_ctx + 1)
    ]
    self._offset: dict[int, int] = {}  # active slot -> its position minus self._steps
    self._steps = 0
    self._warm = False
    self.compile_seconds: dict[str, dict[int, float]] = {}

  # -- building the sessions -------------------------------------------------------------------

  def _session(self, proto: bytes) -> Any:
    import onnxruntime as ort

    from research.serving.onnx_runtime import default_threads

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(self.threads or default_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(proto, options, providers=["CPUExecutionProvider"])

  def warmup(self) -> dict[str, dict[int, float]]:
    """Exports and loads every bucket's prefill and decode step, allocates both cache buffer
    sets, and runs each once; seconds per bucket. Calling it again does nothing."""
    if self._warm:
      return self.compile_seconds
    from research.models import init_decode_cache
    from research.serving.export import export_prefill_onnx, export_slot_decode_onnx

    self.compile_seconds = {"prefill": {}, "generate": {}}
    self._prefill: dict[int, tuple[Any, list[str]]] = {}
    for p in self.prefill_buckets:
      t = time.perf_counter()
      proto, names = export_prefill_onnx(self.model, self.params, p)
      self._prefill[p] = (self._session(proto), names)
      self.compile_seconds["prefill"][p] = time.perf_counter() - t
    empty = [np.asarray(x) for x in _leaves(init_decode_cache(self.model, self.slots))]
    # Two cache sets: a step reads one and writes the other (ONNX Runtime cannot update in place).
    self._caches = [[x.copy() for x in empty], [x.copy() for x in empty]]
    self._current = 0
    self._token = np.zeros((self.slots, 1), np.int32)
    self._pos = np.zeros(self.slots, np.int32)
    self._logits = np.zeros((self.slots, self.vocab), np.float32)
    self._bindings: dict[int, list[Any]] = {}
    for length in self.decode_buckets:
      t = time.perf_counter()
      key_len = None if length == self.n_ctx else length
      proto, names = export_slot_decode_onnx(self.model, self.params, self.slots, key_len)
      session = self._session(proto)
      self._bindings[length] = [self._bind(session, names, src, 1 - src) for src in (0, 1)]
      self.compile_seconds["generate"][length] = time.perf_counter() - t
    for p in self.prefill_buckets:  # every session once: first-run allocations are not timed
      self._insert(self._run_prefill(np.zeros(1, np.int32), 1, p), 0)
      self.free(0)
    for length in self.decode_buckets:
      self._step(length)
    for cache in self._caches:
      for x in cache:
        x.fill(0)
    self._pos.fill(0)
    self._token.fill(0)
    self._steps = 0
    self._warm = True
    return self.compile_seconds

  def _bind(self, session: Any, names: list[str], src: int, dst: int) -> tuple[Any, Any]:
    """An IO binding of `session` reading cache set `src` and writing set `dst`, with the token,
    position and logits buffers: a step is then one call, nothing converted or allocated."""
    binding = session.io_binding()

    def bind(fn, name, x):
      fn(name, "cpu", 0, x.dtype.type, list(x.shape), x.ctypes.data)

    bind(binding.bind_input, "token", self._token)
    bind(binding.bind_input, "pos", self._pos)
    for name, x in zip(names, self._caches[src]):
      bind(binding.bind_input, name, x)
    bind(binding.bind_output, "logits", self._logits)
    for i, x in enumerate(self._caches[dst]):
      bind(binding.bind_output, f"cache_out_{i}", x)
    return session, binding

  @property
  def compilations_after_warmup(self) -> int:
    """Always 0: ONNX Runtime sessions are built at warm-up and nothing is compiled after."""
    if not self._warm:
      raise RuntimeError("call warmup() first")
    return 0

  def _ensure_warm(self) -> None:
    if not self._warm:
      self.warmup()

  # -- requests ----------------------------------------------------------------------------------

  def check(self, request: Request) -> np.ndarray:
    """The request's prompt as int32, or GenerationError naming what to change (the jax
    engine's checks, and greedy only)."""
    prompt = DecodeEngine.check(self, request)  # reads only n_ctx, vocab and prefill_buckets
    if request.temperature > 0:
      raise GenerationError(
        f"request {request.id!r}: the ONNX Runtime engine decodes greedily; give temperature 0 "
        "or serve sampled requests with the jax DecodeEngine"
      )
    return prompt

  bucket_for = DecodeEngine.bucket_for

  # -- the engine API --------------------------------------------------------------------------

  def prefill(self, request: Request) -> Prefix:
    """The request's prompt run once: its padded keys/values and its first token (host int)."""
    self._ensure_warm()
    return self._prefill_checked(self.check(request), request)

  def _prefill_checked(self, prompt: np.ndarray, request: Request) -> Prefix:
    return self._run_prefill(prompt, prompt.size)

  def _run_prefill(self, prompt: np.ndarray, length: int, bucket: int | None = None) -> Prefix:
    bucket = bucket or self.bucket_for(length, self.prefill_buckets)
    padded = np.zeros((1, bucket), np.int32)
    padded[0, :length] = prompt
    session, _ = self._prefill[bucket]
    logits, *kv = session.run(None, {"prompt": padded, "length": np.array(length, np.int32)})
    return Prefix(kv, int(logits[0].argmax()), int(length), bucket, np.zeros(0, np.uint32), 0.0)

  def insert(self, prefix: Prefix, slot: int) -> None:
    """Places `prefix` in free slot `slot`: its next decode step writes position prefix.length."""
    self._ensure_warm()
    self._insert(prefix, slot)

  def _insert(self, prefix: Prefix, slot: int) -> None:
    if not 0 <= slot < self.slots or slot in self._offset:
      raise ValueError(f"slot {slot} is not a free slot of {self.slots}")
    for buffer, rows, axis in zip(self._caches[self._current], prefix.kv, self._t_axes):
      index = [slot] + [slice(None)] * (buffer.ndim - 1)
      index[axis] = slice(0, prefix.bucket)
      buffer[tuple(index)] = rows[0]
    self._pos[slot] = prefix.length
    self._token[slot, 0] = prefix.first_token
    self._offset[slot] = prefix.length - self._steps

  def _step(self, length: int) -> np.ndarray:
    session, binding = self._bindings[length][self._current]
    session.run_with_iobinding(binding)
    self._current = 1 - self._current
    tokens = self._logits.argmax(-1).astype(np.int32)
    self._token[:, 0] = tokens
    np.minimum(self._pos + 1, self.n_ctx - 1, out=self._pos)  # free slots stay in the cache
    return tokens

  def generate(self) -> np.ndarray:
    """One decode step of every slot: the next token of each [slots] (free slots' are junk)."""
    self._ensure_warm()
    top = max(self._offset.values(), default=-self._steps) + self._steps
    if top >= self.n_ctx:
      raise GenerationError(
        f"a slot has reached the end of the context (n_ctx={self.n_ctx}); free it first"
      )
    tokens = self._step(self._bucket_of[top + 1])
    self._steps += 1
    return tokens

  def free(self, slot: int) -> None:
    """Marks `slot` free: its request is done and a new prefix may be inserted there."""
    self._offset.pop(slot, None)

  def free_slots(self) -> list[int]:
    return [s for s in range(self.slots) if s not in self._offset]

  def active_slots(self) -> list[int]:
    return sorted(self._offset)

  def position(self, slot: int) -> int:
    """The position the active slot's next token is written at (its context length so far)."""
    return self._offset[slot] + self._steps


def _leaves(tree: Any) -> list:
  import jax

  return jax.tree.leaves(tree)
