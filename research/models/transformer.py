"""Decoder-only Transformer language model (GPT-2 layout) with a functional KV cache.

One set of parameters runs in two modes through the same blocks: `__call__` (the whole sequence,
for training) and `decode` (new tokens against an explicit cache of keys and values, for
generation). The only difference between the two is where attention's keys and values come from;
masking is by absolute position in both, so the cache has a fixed size (`n_ctx`) and every decode
step has the same shapes.

`decode` takes one start position for the whole batch, or one per row (`start_pos` of shape [B]):
each row then embeds, writes and masks at its own positions, which is what lets sequences of
different lengths share one batched step. `key_len` scores only the cache's first `key_len`
positions: keys beyond every query's position are masked anyway, so a caller that knows how full
the cache is can skip them and pay for the filled part, not for n_ctx.

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
  """[S, T] booleans ([B, S, T] for per-row positions [B, S]): a query sees keys at its own
  position and before."""
  if q_pos_S.ndim == 2:
    return k_pos_T[None, None, :] <= q_pos_S[:, :, None]
  return k_pos_T[None, :] <= q_pos_S[:, None]


class Block(nn.Module):
  """Pre-LayerNorm block: x + attn(ln(x)), then x + mlp(ln(x)), MLP with tanh-GELU."""

  n_head: int
  d_ff: int
  n_layer: int
  dtype: Any = None
  cache_layout: str = "BTHD"

  @nn.compact
  def __call__(
    self,
    x_BxSxD: jax.Array,
    q_pos_S: jax.Array,
    kv: dict[str, jax.Array] | None,
    start_pos: jax.Array | int,
    key_len: int | None = None,
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
      heads_first = self.cache_layout == "BHTD"  # buffers [B, N, T, Dh], else [B, T, N, Dh]
      if q_pos_S.ndim == 2:  # per-row positions [B, S]: a scatter, row by row
        rows_Bx1 = jnp.arange(batch)[:, None]
        where = (rows_Bx1, slice(None), q_pos_S) if heads_first else (rows_Bx1, q_pos_S)
        new_kv = {  # (with heads first, the indexed view is [B, S, N, Dh] all the same)
          name: kv[name].at[where].set(new.astype(kv[name].dtype))
          for name, new in (("k", k_BxSxNxDh), ("v", v_BxSxNxDh))
        }
      elif heads_first:
        new_kv = {
          name: lax.dynamic_update_slice(
            kv[name], new.transpose(0, 2, 1, 3).astype(kv[name].dtype), (0, 0, start_pos, 0)
          )
          for name, new in (("k", k_BxSxNxDh), ("v", v_BxSxNxDh))
        }
      else:
        idx = (0, start_pos, 0, 0)
        new_kv = {
          "k": lax.dynamic_update_slice(kv["k"], k_BxSxNxDh.astype(kv["k"].dtype), idx),
          "v": lax.dynamic_update_slice(kv["v"], v_BxSxNxDh.astype(kv["v"].dtype), idx),
        }
      keys, values = new_kv["k"], new_kv["v"]
      t_axis = 2 if heads_first else 1
      if key_len is not None:  # positions >= key_len are masked for every query: skip them
        keys = lax.slice_in_dim(keys, 0, key_len, axis=t_axis)
        values = lax.slice_in_dim(values, 0, key_len, axis=t_axis)
      keys = keys.astype(q_BxSxNxDh.dtype)
      values = values.astype(q_BxSxNxDh.dtype)
      k_pos_T = jnp.arange(keys.shape[t_axis])

    kv_spec = "bhkd" if kv is not None and self.cache_layout == "BHTD" else "bkhd"
    scores_BxNxSxT = jnp.einsum(f"bshd,{kv_spec}->bhsk", q_BxSxNxDh, keys).astype(jnp.float32)
    mask = causal_mask(q_pos_S, k_pos_T)
    if mask.ndim == 3:  # per row: [B, S, T] -> [B, 1, S, T], one mask for every head
      mask = mask[:, None]
    scores_BxNxSxT = jnp.where(mask, scores_BxNxSxT, jnp.finfo(jnp.float32).min)
    probs_BxNxSxT = jax.nn.softmax(scores_BxNxSxT, axis=-1).astype(values.dtype)
    attn_BxSxNxDh = jnp.einsum(f"bhsk,{kv_spec}->bshd", probs_BxNxSxT, values)
    x_BxSxD = x_BxSxD + dense(d, "attn_out", resid_std)(attn_BxSxNxDh.reshape(batch, s, d))

    hidden = nn.gelu(dense(self.d_ff, "mlp_in")(ln("ln_mlp")(x_BxSxD)), approximate=True)
    x_BxSxD = x_BxSxD + dense(d, "mlp_out", resid_std)(hidden)
    return x_BxSxD, new_kv


class Transformer(nn.Module):
  """Token + learned position embeddings, `n_layer` pre-LN blocks, final LayerNorm, logits.

  With `tied_embeddings` the output projection is the token embedding transposed (no bias);
  otherwise a separate bias-free Dense. `num_classes` is the vocabulary size (the registry's name).
  `cache_layout` orders the decode cache's axes: "BTHD" [B, n_ctx, heads, Dh] (the default, which
  the ONNX export's cache inputs follow) or "BHTD" [B, heads, n_ctx, Dh], which batched decoding
  reads without transposing (research.serving.decode_engine.for_serving). Params are the same.
  """

  num_classes: int
  n_layer: int = 2
  d_model: int = 64
  n_head: int = 4
  d_ff: int = 256
  n_ctx: int = 64
  tied_embeddings: bool = True
  dtype: Any = None
  cache_layout: str = "BTHD"

  def setup(self):
    if self.d_model % self.n_head:
      raise ModelError(f"d_model ({self.d_model}) must be a multiple of n_head ({self.n_head})")
    if self.cache_layout not in ("BTHD", "BHTD"):
      raise ModelError(f"unknown cache_layout {self.cache_layout!r}; choose BTHD or BHTD")
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
      Block(self.n_head, self.d_ff, self.n_layer, self.dtype, self.cache_layout, name=f"block{i}")
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
    self,
    tokens_BxS: jax.Array,
    cache: KVCache,
    start_pos: jax.Array | int,
    key_len: int | None = None,
  ) -> tuple[jax.Array, KVCache]:
    """Logits [B, S, V] for S new tokens at positions start_pos.., and the updated cache.

    `start_pos` is one position for every row (an int or a scalar), or one per row (an int
    array of shape [B]). The cache must hold the keys/values of each row's positions before its
    start (from earlier calls). `key_len` (a Python int) scores only cache positions
    < key_len; it must exceed every new token's position, or a query would miss its own key.

    Only Python ints can be checked here: a traced start_pos with start_pos + S > n_ctx would be
    silently clamped (or, per row, dropped), so callers (research/serving/) check first.
    """
    s = tokens_BxS.shape[1]
    if len(cache) != self.n_layer:
      raise ValueError(f"cache has {len(cache)} layers, the model {self.n_layer}")
    if s > self.n_ctx:
      raise ValueError(f"{s} new tokens exceed the model's context n_ctx={self.n_ctx}")
    if isinstance(start_pos, int) and start_pos + s > self.n_ctx:
      raise ValueError(f"positions {start_pos}..{start_pos + s - 1} run past n_ctx={self.n_ctx}")
    # start_pos.shape, not jnp.shape: jax2onnx traces jnp.shape, and the comparison would be traced
    if jnp.ndim(start_pos) not in (0, 1) or (
      jnp.ndim(start_pos) == 1 and start_pos.shape[0] != tokens_BxS.shape[0]
    ):
      raise ValueError(
        f"start_pos must be a scalar or one position per row [{tokens_BxS.shape[0]}], "
        f"got shape {jnp.shape(start_pos)}"
      )
    if key_len is not None:
      if not isinstance(key_len, int) or not 0 < key_len <= self.n_ctx:
        raise ValueError(
          f"key_len must be a Python int in [1, n_ctx={self.n_ctx}], got {key_len!r}"
        )
      if isinstance(start_pos, int) and start_pos + s > key_len:
        raise ValueError(f"positions {start_pos}..{start_pos + s - 1} lie beyond key_len {key_len}")
    return self._run(tokens_BxS, cache, start_pos, key_len)

  def _run(
    self,
    tokens_BxS: jax.Array,
    cache: KVCache | None,
    start_pos: jax.Array | int,
    key_len: int | None = None,
  ) -> tuple[jax.Array, KVCache | None]:
    s = tokens_BxS.shape[1]
    if jnp.ndim(start_pos) == 1:  # per row: positions [B, S], embeddings gathered row by row
      q_pos_S = start_pos[:, None] + jnp.arange(s)
      pos_SxD = self.pos_embed[q_pos_S]
    else:
      pos_SxD = lax.dynamic_slice_in_dim(self.pos_embed, start_pos, s)
    x_BxSxD = self.embed(tokens_BxS) + pos_SxD.astype(self.dtype or jnp.float32)
    if jnp.ndim(start_pos) == 0:
      q_pos_S = start_pos + jnp.arange(s)
    new_cache = []
    for i, block in enumerate(self.blocks):
      x_BxSxD, kv = block(x_BxSxD, q_pos_S, None if cache is None else cache[i], start_pos, key_len)
      new_cache.append(kv)
    x_BxSxD = self.ln_f(x_BxSxD)
    logits = self.embed.attend(x_BxSxD) if self.tied_embeddings else self.head(x_BxSxD)
    return logits.astype(jnp.float32), (None if cache is None else tuple(new_cache))


def init_cache(model: Transformer, batch: int, dtype: Any = None) -> KVCache:
  """An empty cache for `model`: zeros, per layer k and v of [batch, n_ctx, n_head, d_head].

  `dtype` defaults to the model's compute dtype (float32 when it has none).
  """
  dtype = dtype or model.dtype or jnp.float32
  t, h, dh = model.n_ctx, model.n_head, model.d_model // model.n_head
  shape = (batch, h, t, dh) if model.cache_layout == "BHTD" else (batch, t, h, dh)
  return tuple(
    {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in range(model.n_layer)
  )
