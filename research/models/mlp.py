"""The MNIST-1D reference MLP: one residual hidden layer."""

from __future__ import annotations

import flax.linen as nn
import jax

from research.models.layers import Dense


class MLP(nn.Module):
  """in -> hidden (ReLU), then h + relu(Dense(h)), then -> classes (15,210 params at 40/100/10)."""

  hidden: int = 100
  num_classes: int = 10
  dtype: object = None
  matmul_impl: str = "auto"  # research.kernels: "auto" picks per backend

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.relu(
      Dense(self.hidden, dtype=self.dtype, matmul_impl=self.matmul_impl)(x.reshape(x.shape[0], -1))
    )
    h = h + nn.relu(Dense(self.hidden, dtype=self.dtype, matmul_impl=self.matmul_impl)(h))
    return Dense(self.num_classes, dtype=self.dtype, matmul_impl=self.matmul_impl)(h)
