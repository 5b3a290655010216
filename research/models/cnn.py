"""Convolutional classifiers: the MNIST-1D reference CNN and a small 2-D CNN for 8x8 digits."""

from __future__ import annotations

import flax.linen as nn
import jax

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
