"""Convolutional classifiers: the MNIST-1D reference CNN and a small 2-D CNN for 8x8 digits."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax

from research.models.flops import LayerFlops, conv_out, dense, valid_taps
from research.models.layers import Conv1D, Dense, check_input_rank


class CNN1D(nn.Module):
  """Three stride-2 convolutions with ReLU, flattened into a linear classifier.

  At the reference sizes (length 40, 25 channels) this is the MNIST-1D paper's 5,210-parameter CNN.
  """

  channels: int = 25
  num_classes: int = 10
  conv_impl: str = "auto"  # research.kernels: "auto" picks per backend
  dtype: object = None
  matmul_impl: str = "auto"  # research.kernels: "auto" picks per backend

  @nn.compact
  def __call__(self, x_BxL: jax.Array) -> jax.Array:
    check_input_rank("cnn1d", x_BxL, (1,), "[N, L] sequences (one value per position)")
    h = x_BxL.reshape(x_BxL.shape[0], -1, 1)
    for kernel_size in (5, 3, 3):
      h = Conv1D(
        self.channels, kernel_size, stride=2, padding=1, impl=self.conv_impl, dtype=self.dtype
      )(h)
      h = nn.relu(h)
    return Dense(self.num_classes, dtype=self.dtype, matmul_impl=self.matmul_impl)(
      h.reshape(h.shape[0], -1)
    )


class CNN2D(nn.Module):
  """A small 2-D CNN for scikit-learn's 8x8 digits: 3x3 conv, stride-2 3x3 conv, linear."""

  channels: tuple[int, int] = (16, 32)
  num_classes: int = 10
  dtype: object = None
  matmul_impl: str = "auto"  # research.kernels: "auto" picks per backend

  @nn.compact
  def __call__(self, x_BxYxX: jax.Array) -> jax.Array:
    check_input_rank("cnn2d", x_BxYxX, (2, 3), "[N, Y, X] or [N, Y, X, C] images")
    h = x_BxYxX.reshape(*x_BxYxX.shape[:3], -1)
    h = nn.relu(nn.Conv(self.channels[0], (3, 3), padding=1, dtype=self.dtype)(h))
    h = nn.relu(nn.Conv(self.channels[1], (3, 3), strides=2, padding=1, dtype=self.dtype)(h))
    return Dense(self.num_classes, dtype=self.dtype, matmul_impl=self.matmul_impl)(
      h.reshape(h.shape[0], -1)
    )


def cnn1d_layer_flops(
  model_config: Mapping[str, Any], input_shape: Sequence[int], num_classes: int
) -> list[LayerFlops]:
  """Forward FLOPs per example of CNN1D (conventions: research/models/flops.py)."""
  channels = int(model_config.get("channels", 25))
  length, c_in, layers = int(input_shape[0]), 1, []
  for i, k in enumerate((5, 3, 3)):
    out = conv_out(length, k, 2, 1)
    layers.append(
      LayerFlops(
        f"conv{i + 1}",
        2.0 * valid_taps(length, k, 2, 1) * c_in * channels,
        2.0 * out * channels,
        input_is_data=(i == 0),
      )
    )
    length, c_in = out, channels
  layers.append(dense("dense", length * channels, num_classes, False, False))
  return layers


def cnn2d_layer_flops(
  model_config: Mapping[str, Any], input_shape: Sequence[int], num_classes: int
) -> list[LayerFlops]:
  """Forward FLOPs per example of CNN2D (conventions: research/models/flops.py)."""
  c1, c2 = (int(c) for c in model_config.get("channels", (16, 32)))
  h, w = int(input_shape[0]), int(input_shape[1])
  c_in = int(input_shape[2]) if len(input_shape) > 2 else 1
  taps1 = valid_taps(h, 3, 1, 1) * valid_taps(w, 3, 1, 1)
  l1 = LayerFlops("conv1", 2.0 * taps1 * c_in * c1, 2.0 * h * w * c1, True)
  h2, w2 = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
  taps2 = valid_taps(h, 3, 2, 1) * valid_taps(w, 3, 2, 1)
  l2 = LayerFlops("conv2", 2.0 * taps2 * c1 * c2, 2.0 * h2 * w2 * c2, False)
  return [l1, l2, dense("dense", h2 * w2 * c2, num_classes, False, False)]
