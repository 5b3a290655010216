"""Decoder-only Transformer language model (GPT-2 layout) with a functional KV cache.

One set of parameters runs in two modes through the same blocks: `__call__` (the whole sequence,
for training) and `decode` (new tokens against an explicit cache of keys and values, for
generation). The only difference between the two is where attention's keys and values come from;
masking is by absolute position in both, so the cache has a fixed size (`n_ctx`) and every decode
step has the same shapes.

Parameters are float32; `dtype` is the compute dtype (cast at use, as `nn.Dense(dtype=...)`
does). Logits always come back in float32 and softmax runs in float32.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from research.models.layers import ModelError, check_input_rank

# Per layer: {"k": [B, n_ctx, H, Dh], "v": [B, n_ctx, H, Dh]}.
KVCache = tuple[dict[str, jax.Array], ...]

_INIT_STD = 0.02  # GPT-2's


def causal_mask(q_pos_S: jax.Array, k_pos_T: jax.Array) -> jax.Array:
  """[S, K] booleans: a query sees keys at its own position and before."""
  return k_pos_T[None, :] <= q_pos_S[:, None]


class Block(nn.Module):
  """Pre-LayerNorm block: x + attn(ln(x)), then x + mlp(ln(x)), MLP with tanh-GELU."""

  n_head: int
  d_ff: int
  n_layer: int
  dtype: Any = None

  @nn.compact
  def __call__(
    self,
    x_BxSxD: jax.Array,
    q_pos_S: jax.Array,
    kv: dict[str, jax.Array] | None,
    start_pos: jax.Array | int,
  ) -> tuple[jax.Array, dict[str, jax.Array] | None]:
    batch, s, d = x_BxSxD.shape
    h = self.n_head
    dh = d // h

    def dense(features: int, name: str, std: float = _INIT_STD) -> nn.Dense:
      return nn.Dense(
        features,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        name=name,
        kernel_init=nn.initializers.normal(std),
      )

    def ln(name: str) -> nn.LayerNorm:
      return nn.LayerNorm(dtype=self.dtype, param_dtype=jnp.float32, name=name)

    # Residual projections start smaller so the stream's variance does not grow with depth.
    resid_std = _INIT_STD / (2 * self.n_layer) ** 0.5

    qkv_BxSx3xNxDh = dense(3 * d, "qkv")(ln("ln_attn")(x_BxSxD)).reshape(batch, s, 3, h, dh)
    # Scaling q (S*D numbers) is cheaper than scaling the scores (S*K per head).
    q_BxSxNxDh = qkv_BxSx3xNxDh[:, :, 0] * jnp.asarray(dh**-0.5, qkv_BxSx3xNxDh.dtype)
    k_BxSxNxDh, v_BxSxNxDh = qkv_BxSx3xNxDh[:, :, 1], qkv_BxSx3xNxDh[:, :, 2]
    if kv is None:
      # Full sequence: the keys are this call's own tokens, at positions 0..S-1.
      keys, values, k_pos_T, new_kv = k_BxSxNxDh, v_BxSxNxDh, q_pos_S, None
    else:
      # Decode: write the new keys/values at start_pos, attend over the whole fixed-size cache;
      # slots not yet written sit at positions > every query and are masked out.
      idx = (0, start_pos, 0, 0)
      new_kv = {
        "k": lax.dynamic_update_slice(kv["k"], k_BxSxNxDh.astype(kv["k"].dtype), idx),
        "v": lax.dynamic_update_slice(kv["v"], v_BxSxNxDh.astype(kv["v"].dtype), idx),
      }
      keys = new_kv["k"].astype(q_BxSxNxDh.dtype)
      values = new_kv["v"].astype(q_BxSxNxDh.dtype)
      k_pos_T = jnp.arange(keys.shape[1])

    scores_BxNxSxT = jnp.einsum("bshd,bkhd->bhsk", q_BxSxNxDh, keys).astype(jnp.float32)
    scores_BxNxSxT = jnp.where(
      causal_mask(q_pos_S, k_pos_T), scores_BxNxSxT, jnp.finfo(jnp.float32).min
    )
    probs_BxNxSxT = jax.nn.softmax(scores_BxNxSxT, axis=-1).astype(values.dtype)
    attn_BxSxNxDh = jnp.einsum("bhsk,bkhd->bshd", probs_BxNxSxT, values)
    x_BxSxD = x_BxSxD + dense(d, "attn_out", resid_std)(attn_BxSxNxDh.reshape(batch, s, d))

    hidden = nn.gelu(dense(self.d_ff, "mlp_in")(ln("ln_mlp")(x_BxSxD)), approximate=True)
    x_BxSxD = x_BxSxD + dense(d, "mlp_out", resid_std)(hidden)
    return x_BxSxD, new_kv


class Transformer(nn.Module):
  """Token + learned position embeddings, `n_layer` pre-LN blocks, final LayerNorm, logits.

  With `tied_embeddings` the output projection is the token embedding transposed (no bias);
  otherwise a separate bias-free Dense. `num_classes` is the vocabulary size (the registry's name).
  """

  num_classes: int
  n_layer: int = 2
  d_model: int = 64
  n_head: int = 4
  d_ff: int = 256
  n_ctx: int = 64
  tied_embeddings: bool = True
  dtype: Any = None

  def setup(self):
    if self.d_model % self.n_head:
      raise ModelError(f"d_model ({self.d_model}) must be a multiple of n_head ({self.n_head})")
    self.embed = nn.Embed(
      self.num_classes,
      self.d_model,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      embedding_init=nn.initializers.normal(_INIT_STD),
    )
    self.pos_embed = self.param(
      "pos_embed", nn.initializers.normal(_INIT_STD / 2), (self.n_ctx, self.d_model), jnp.float32
    )
    self.blocks = [
      Block(self.n_head, self.d_ff, self.n_layer, self.dtype, name=f"block{i}")
      for i in range(self.n_layer)
    ]
    self.ln_f = nn.LayerNorm(dtype=self.dtype, param_dtype=jnp.float32)
    if not self.tied_embeddings:
      self.head = nn.Dense(
        self.num_classes,
        use_bias=False,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.normal(_INIT_STD),
      )

  def __call__(self, tokens_BxT: jax.Array) -> jax.Array:
    """Logits [B, T, V] (float32) of the next token at every position; T <= n_ctx."""
    check_input_rank("transformer", tokens_BxT, (1,), "[N, T] token ids")
    t = tokens_BxT.shape[1]
    if t > self.n_ctx:
      raise ModelError(f"sequence length {t} exceeds the model's context n_ctx={self.n_ctx}")
    logits, _ = self._run(tokens_BxT, None, 0)
    return logits

  def decode(
    self, tokens_BxS: jax.Array, cache: KVCache, start_pos: jax.Array | int
  ) -> tuple[jax.Array, KVCache]:
    """Logits [B, S, V] for S new tokens at positions start_pos.., and the updated cache.

    The cache must hold the keys/values of positions < start_pos (from earlier calls). Only a
    Python-int start_pos can be checked here: a traced one with start_pos + S > n_ctx would be
    silently clamped by `dynamic_update_slice`, so callers (research/serving/generate.py) check
    first.
    """
    s = tokens_BxS.shape[1]
    if len(cache) != self.n_layer:
      raise ValueError(f"cache has {len(cache)} layers, the model {self.n_layer}")
    if s > self.n_ctx:
      raise ValueError(f"{s} new tokens exceed the model's context n_ctx={self.n_ctx}")
    if isinstance(start_pos, int) and start_pos + s > self.n_ctx:
      raise ValueError(f"positions {start_pos}..{start_pos + s - 1} run past n_ctx={self.n_ctx}")
    return self._run(tokens_BxS, cache, start_pos)

  def _run(
    self, tokens_BxS: jax.Array, cache: KVCache | None, start_pos: jax.Array | int
  ) -> tuple[jax.Array, KVCache | None]:
    s = tokens_BxS.shape[1]
    pos_SxD = lax.dynamic_slice_in_dim(self.pos_embed, start_pos, s)
    x_BxSxD = self.embed(tokens_BxS) + pos_SxD.astype(self.dtype or jnp.float32)
    q_pos_S = start_pos + jnp.arange(s)
    new_cache = []
    for i, block in enumerate(self.blocks):
      x_BxSxD, kv = block(x_BxSxD, q_pos_S, None if cache is None else cache[i], start_pos)
      new_cache.append(kv)
    x_BxSxD = self.ln_f(x_BxSxD)
    logits = self.embed.attend(x_BxSxD) if self.tied_embeddings else self.head(x_BxSxD)
    return logits.astype(jnp.float32), (None if cache is None else tuple(new_cache))


def init_cache(model: Transformer, batch: int, dtype: Any = None) -> KVCache:
  """An empty cache for `model`: zeros, per layer k and v of [batch, n_ctx, n_head, d_head].

  `dtype` defaults to the model's compute dtype (float32 when it has none).
  """
  dtype = dtype or model.dtype or jnp.float32
  shape = (batch, model.n_ctx, model.n_head, model.d_model // model.n_head)
  return tuple(
    {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in range(model.n_layer)
  )
