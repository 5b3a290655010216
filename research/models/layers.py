"""Layers shared by the model families: the math only; how a product or a convolution is computed
on a given backend is `research.kernels`' choice (`matmul_impl`, `conv_impl`; "auto" per backend).

Initialisation follows PyTorch's defaults (weights and biases uniform in ±1/sqrt(fan_in)) because
the MNIST-1D reference accuracies were reached with them; Flax's LeCun-normal default trains the
same models to slightly different numbers.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.errors import UserError
from research.kernels.conv import conv1d
from research.kernels.matmul import matmul


class ModelError(UserError, ValueError):
  """A model config that names no model or fields the model lacks, or inputs it cannot take."""


def check_input_rank(model: str, x: jax.Array, ranks: tuple[int, ...], layout: str) -> None:
  """Raises ModelError unless each example of `x` has one of `ranks` axes: a model family takes
  one input layout, and flattening another one silently trains on scrambled features."""
  if x.ndim - 1 not in ranks:
    raise ModelError(
      f"model {model} takes {layout}, got inputs of shape [N, "
      f"{', '.join(map(str, x.shape[1:]))}]; reshape the data or pick a model for it "
      f"(model.name=mlp takes any shape)"
    )


def uniform_fan_in(fan_in: int) -> nn.initializers.Initializer:
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for Linear, Conv and GRU."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class Dense(nn.Module):
  """Affine layer whose bias init knows the fan-in, which `nn.Dense`'s bias_init cannot."""

  features: int
  dtype: jnp.dtype | None = None
  matmul_impl: str = "auto"

  @nn.compact
  def __call__(self, x_BxI: jax.Array) -> jax.Array:
    fan_in = x_BxI.shape[-1]
    kernel = self.param("kernel", uniform_fan_in(fan_in), (fan_in, self.features))
    bias = self.param("bias", uniform_fan_in(fan_in), (self.features,))
    x_BxI, kernel, bias = nn.dtypes.promote_dtype(x_BxI, kernel, bias, dtype=self.dtype)
    return matmul(x_BxI, kernel, self.matmul_impl) + bias


class Conv1D(nn.Module):
  """1-D convolution, channels last, with PyTorch's symmetric integer padding.

  `impl` names the kernel (`research.kernels.conv`: "im2col", "xla", or "auto" for the backend's
  fastest); every implementation takes the same (k, C_in, C_out) kernel.
  """

  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  impl: str = "auto"
  align: int = 8
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x_BxLxC: jax.Array) -> jax.Array:
    k, c_in = self.kernel_size, x_BxLxC.shape[-1]
    init = uniform_fan_in(k * c_in)
    kernel_KxCxF = self.param("kernel", init, (k, c_in, self.features))
    bias = self.param("bias", init, (self.features,))
    x_BxLxC, kernel_KxCxF, bias = nn.dtypes.promote_dtype(
      x_BxLxC, kernel_KxCxF, bias, dtype=self.dtype
    )
    y = conv1d(x_BxLxC, kernel_KxCxF, self.stride, self.padding, self.impl, self.align)
    return y + bias
