"""The MNIST-1D reference MLP: one residual hidden layer."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np

from research.models.flops import LayerFlops, dense
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


def layer_flops(
  model_config: Mapping[str, Any], input_shape: Sequence[int], num_classes: int
) -> list[LayerFlops]:
  """Forward FLOPs per example (conventions: research/models/flops.py)."""
  n_in = int(np.prod(input_shape))
  hidden = int(model_config.get("hidden", 100))
  l1 = dense("dense_in", n_in, hidden, True, True)
  l2 = dense("dense_residual", hidden, hidden, True, False)
  l2 = dataclasses.replace(l2, elementwise=l2.elementwise + hidden)  # h + relu(...)
  return [l1, l2, dense("dense_out", hidden, num_classes, False, False)]
