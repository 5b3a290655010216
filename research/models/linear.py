"""Logistic regression: the MNIST-1D paper's linear baseline."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np

from research.models.flops import LayerFlops, dense
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


def layer_flops(
  model_config: Mapping[str, Any], input_shape: Sequence[int], num_classes: int
) -> list[LayerFlops]:
  """Forward FLOPs per example (conventions: research/models/flops.py)."""
  return [dense("dense", int(np.prod(input_shape)), num_classes, False, True)]
