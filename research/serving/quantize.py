"""Cheaper inference precisions: bf16 weights, and int8 weight-only quantization.

What a lower precision costs in accuracy is measured by the benchmarks; here are only the params
transforms. int8 is symmetric per output channel and dequantized inside the jitted call, so it
shrinks storage and weight traffic, not the arithmetic.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from research.serving import InferenceError

PRECISIONS = ("float32", "bfloat16", "int8")


@flax.struct.dataclass
class Int8Weight:
  """Symmetric per-output-channel int8 weight: w ≈ q * scale (scale over the last axis)."""

  q: jax.Array
  scale: jax.Array

  def dequantize(self) -> jax.Array:
    return self.q.astype(jnp.float32) * self.scale


def quantize_int8(params: Any) -> Any:
  """Weight-only int8: every weight matrix (ndim >= 2) becomes `Int8Weight`; biases stay fp32."""

  def quantize(w):
    if w.ndim < 2:
      return w
    w = jnp.asarray(w, jnp.float32)
    amax = jnp.max(jnp.abs(w), axis=tuple(range(w.ndim - 1)), keepdims=True)
    scale = jnp.where(amax > 0, amax / 127.0, 1.0)
    return Int8Weight(jnp.clip(jnp.round(w / scale), -127, 127).astype(jnp.int8), scale)

  return jax.tree.map(quantize, params)


def dequantize(params: Any) -> Any:
  return jax.tree.map(
    lambda w: w.dequantize() if isinstance(w, Int8Weight) else w,
    params,
    is_leaf=lambda w: isinstance(w, Int8Weight),
  )


def cast_params(params: Any, precision: str) -> Any:
  """Params as stored for inference in `precision` (the model computes in the matching dtype)."""
  if precision == "float32":
    return params
  if precision == "bfloat16":
    return jax.tree.map(lambda w: w.astype(jnp.bfloat16), params)
  if precision == "int8":
    return quantize_int8(params)
  raise InferenceError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
