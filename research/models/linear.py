"""Logistic regression: the MNIST-1D paper's linear baseline."""

from __future__ import annotations

import flax.linen as nn
import jax

from research.models.layers import Dense


class Logistic(nn.Module):
  """One affine map from the flattened input to class logits."""

  num_classes: int = 10
  dtype: object = None
  matmul_impl: str = "auto"  # research.kernels: "auto" picks per backend

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return Dense(self.num_classes, dtype=self.dtype, matmul_impl=self.matmul_impl)(
      x.reshape(x.shape[0], -1)
    )
