"""Autoregressive generation with a KV cache, jitted apart from training, for any decoder model.

The generator knows no model class: it needs a module with a `decode(tokens, cache, start_pos)`
method, `n_ctx` and `num_classes` fields, and a cache constructor registered for its class in
`research.models.CACHE_BUILDERS` (the Transformer's is `init_cache`).


Serving has two phases: prefill runs the whole prompt once and fills the cache; each decode step
then runs one token per sequence against it. Both are compiled once per shape (the decode step
once for every position: the position is traced and the cache has a fixed size), and the decode
step donates the cache so XLA updates it in place instead of copying n_layer x 2 buffers per
token. Positions go in as Python ints (traced as int32, so one compilation serves them all):
building a device scalar per token cost more than the decode step itself on CPU. `generate`
drives them from a Python loop, as a real-time server does (and as a
time-per-output-token benchmark should time); `generate_scan` is the same computation in one
compiled `lax.scan`, for batched throughput.

Sampling keys are `fold_in(key, i)` for the i-th new token in both, so they give the same tokens.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from research.errors import UserError
from research.models import init_decode_cache

KVCache = Any  # a pytree of per-layer buffers, whatever the model keeps


class GenerationError(UserError, ValueError):
  """A generation request the model cannot serve; the message says what to change."""


def _next_token(
  logits_BxV: jax.Array, temperature: float, key: jax.Array, i: jax.Array
) -> jax.Array:
  """Greedy at temperature 0 (a Python float, so the branch is static), else a sample."""
  if temperature == 0.0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  return jax.random.categorical(
    jax.random.fold_in(key, i), logits_BxV / temperature, axis=-1
  ).astype(jnp.int32)


class Generator:
  """Jitted prefill, decode step and generation loops for one model (params passed per call).

  prefill(params, prompt_BxP) -> (last_logits_BxV, cache): the prompt at positions 0..P-1.
  decode_step(params, token_B, cache, pos) -> (logits_BxV, cache): `token_B` at position `pos`;
    the cache argument is donated (unusable after the call).
  next_token(logits_BxV, temperature, key, i) -> token_B: greedy at 0, else the i-th sample.
  """

  def __init__(self, model: Any):
    self.model = model
    self.prefill = jax.jit(self._prefill)
    self.decode_step = jax.jit(self._decode_step, donate_argnums=(2,))
    self.next_token = jax.jit(_next_token, static_argnums=(1,))
    self._scan = jax.jit(self._generate_scan, static_argnums=(2, 3))

  def _prefill(self, params: Any, prompt_BxP: jax.Array) -> tuple[jax.Array, KVCache]:
    cache = init_decode_cache(self.model, prompt_BxP.shape[0])
    logits_BxPxV, cache = self.model.apply(params, prompt_BxP, cache, 0, method="decode")
    return logits_BxPxV[:, -1], cache

  def _decode_step(
    self, params: Any, token_B: jax.Array, cache: KVCache, pos: jax.Array
  ) -> tuple[jax.Array, KVCache]:
    logits_Bx1xV, cache = self.model.apply(params, token_B[:, None], cache, pos, method="decode")
    return logits_Bx1xV[:, 0], cache

  def _check(self, prompt_BxP: Any, max_new_tokens: int, temperature: float, key: Any) -> jax.Array:
    if not hasattr(prompt_BxP, "dtype") or np.ndim(prompt_BxP) != 2:
      raise GenerationError(
        "the prompt must be a [batch, length] integer array, got "
        f"{type(prompt_BxP).__name__} of shape {np.shape(prompt_BxP)}"
      )
    if not jnp.issubdtype(prompt_BxP.dtype, jnp.integer):
      raise GenerationError(f"prompt tokens must be integers, got dtype {prompt_BxP.dtype}")
    batch, length = prompt_BxP.shape
    if batch == 0 or length == 0:
      raise GenerationError(
        f"empty prompt (shape {prompt_BxP.shape}); give at least one token per sequence"
      )
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
      raise GenerationError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
    if length + max_new_tokens > self.model.n_ctx:
      raise GenerationError(
        f"prompt ({length}) + new tokens ({max_new_tokens}) exceed the "
        f"model's context n_ctx={self.model.n_ctx}"
      )
    if not temperature >= 0.0:
      raise GenerationError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if temperature > 0.0 and key is None:
      raise GenerationError(f"sampling at temperature {temperature} needs a PRNG key (key=...)")
    tokens = np.asarray(prompt_BxP)
    if tokens.min() < 0 or tokens.max() >= self.model.num_classes:
      raise GenerationError(
        f"prompt tokens must lie in [0, {self.model.num_classes}), got "
        f"[{tokens.min()}, {tokens.max()}]"
      )
    return jnp.asarray(prompt_BxP, jnp.int32)

  def generate(
    self,
    params: Any,
    prompt_BxP: Any,
    max_new_tokens: int,
    temperature: float = 0.0,
    key: jax.Array | None = None,
  ) -> jax.Array:
    """The `max_new_tokens` new tokens [B, N] (int32), one jitted decode step per token.

    Greedy when `temperature` is 0, else sampled from softmax(logits / temperature) with `key`.
    """
    temperature = float(temperature)
    prompt = self._check(prompt_BxP, max_new_tokens, temperature, key)
    batch, length = prompt.shape
    if max_new_tokens == 0:
      return jnp.zeros((batch, 0), jnp.int32)
    key = jax.random.key(0) if key is None else key  # unused when greedy
    logits, cache = self.prefill(params, prompt)
    tokens = []
    for i in range(max_new_tokens):
      token = self.next_token(logits, temperature, key, i)
      tokens.append(token)
      if i + 1 < max_new_tokens:  # the last token is returned, never fed back
        logits, cache = self.decode_step(params, token, cache, length + i)
    return jnp.stack(tokens, axis=1)

  def generate_scan(
    self,
    params: Any,
    prompt_BxP: Any,
    max_new_tokens: int,
    temperature: float = 0.0,
    key: jax.Array | None = None,
  ) -> jax.Array:
    """Same tokens as `generate`, from one compiled program (prefill + a scan of decode steps).

    Compiled once per (prompt shape, max_new_tokens, temperature).
    """
    temperature = float(temperature)
    prompt = self._check(prompt_BxP, max_new_tokens, temperature, key)
    if max_new_tokens == 0:
      return jnp.zeros((prompt.shape[0], 0), jnp.int32)
    key = jax.random.key(0) if key is None else key
    return self._scan(params, prompt, max_new_tokens, temperature, key)

  def _generate_scan(self, params, prompt_BxP, max_new_tokens, temperature, key):
    length = prompt_BxP.shape[1]
    logits, cache = self._prefill(params, prompt_BxP)
    first_B = _next_token(logits, temperature, key, jnp.int32(0))

    def body(carry, i):
      token_B, cache = carry
      logits, cache = self._decode_step(params, token_B, cache, length + i - 1)
      next_B = _next_token(logits, temperature, key, i)
      return (next_B, cache), next_B

    _, rest_GxB = lax.scan(body, (first_B, cache), jnp.arange(1, max_new_tokens, dtype=jnp.int32))
    return jnp.concatenate([first_B[:, None], rest_GxB.T], axis=1)


def make_generator(model: Any) -> Generator:
  """A `Generator` for `model`: prefill, decode_step, generate, generate_scan."""
  return Generator(model)
