"""Layers shared by the model families.

Initialisation follows PyTorch's defaults (weights and biases uniform in ±1/sqrt(fan_in)) because
the MNIST-1D reference accuracies were reached with them; Flax's LeCun-normal default trains the
same models to slightly different numbers.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


@jax.custom_vjp
def patch_matmul(patches_MxK: jax.Array, kernel_KxN: jax.Array) -> jax.Array:
  """patches @ kernel, with a backward pass laid out for XLA:CPU's fast matmul path.

  Autodiff gives the kernel gradient as patches^T @ dY, a dot contracting the leading axis of
  both operands; XLA:CPU leaves that as a slow generic dot. Materialising patches^T first makes it
  a standard-layout matmul, which XLA hands to its fast library path (about 2x on the MNIST-1D
  CNN's train step). Forward values and gradients are unchanged.
  """
  return patches_MxK @ kernel_KxN


def _patch_matmul_fwd(patches, kernel):
  # Saved already transposed: XLA builds it in the same pass as the patches themselves; the
  # barrier keeps it from folding the transpose back into the gradient's dot.
  patches_T = lax.optimization_barrier(patches.reshape(-1, kernel.shape[0]).T)
  return patches @ kernel, (patches_T, kernel)


def _patch_matmul_bwd(residuals, g):
  patches_T, kernel = residuals
  d_kernel = patches_T @ g.reshape(-1, kernel.shape[1])
  d_patches = g @ kernel.T
  return d_patches, d_kernel.astype(kernel.dtype)


patch_matmul.defvjp(_patch_matmul_fwd, _patch_matmul_bwd)


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

  @nn.compact
  def __call__(self, x_BxI: jax.Array) -> jax.Array:
    fan_in = x_BxI.shape[-1]
    kernel = self.param("kernel", uniform_fan_in(fan_in), (fan_in, self.features))
    bias = self.param("bias", uniform_fan_in(fan_in), (self.features,))
    x_BxI, kernel, bias = nn.dtypes.promote_dtype(x_BxI, kernel, bias, dtype=self.dtype)
    return patch_matmul(x_BxI, kernel) + bias


class Conv1D(nn.Module):
  """1-D convolution, channels last, with PyTorch's symmetric integer padding.

  `impl="im2col"` builds the k shifted strided views and does one matmul; `impl="xla"` calls
  `lax.conv_general_dilated`. Both use the same (k, C_in, C_out) kernel. On XLA:CPU the im2col form
  is much faster inside a train loop (results/train_loop_structure.md).
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  impl: str = "im2col"
  align: int = 8
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x_BxLxC: jax.Array) -> jax.Array:
    k, s, p = self.kernel_size, self.stride, self.padding
    c_in = x_BxLxC.shape[-1]
    init = uniform_fan_in(k * c_in)
    kernel_KxCxF = self.param("kernel", init, (k, c_in, self.features))
    bias = self.param("bias", init, (self.features,))
    x_BxLxC, kernel_KxCxF, bias = nn.dtypes.promote_dtype(
        x_BxLxC, kernel_KxCxF, bias, dtype=self.dtype)
    if self.impl == "xla":
      y = lax.conv_general_dilated(
          x_BxLxC, kernel_KxCxF, window_strides=(s,), padding=[(p, p)],
          dimension_numbers=("NWC", "WIO", "NWC"))
      return y + bias
    if self.impl != "im2col":
      raise ValueError(f"unknown Conv1D impl {self.impl!r}; use 'im2col' or 'xla'")
    length = x_BxLxC.shape[1]
    out_len = (length + 2 * p - k) // s + 1
    x_pad = jnp.pad(x_BxLxC, ((0, 0), (p, p), (0, 0)))
    # Tap j of output position t reads input position t*s + j - p.
    taps = [lax.slice_in_dim(x_pad, j, j + s * (out_len - 1) + 1, stride=s, axis=1)
            for j in range(k)]
    kernel_KCxF = kernel_KxCxF.reshape(k * c_in, self.features)
    if self.align > 1:
      # XLA:CPU's small dots run about twice as fast when both the contraction and the output
      # width are multiples of 8; zero rows/columns leave the result unchanged.
      kc_pad = -(k * c_in) % self.align
      f_pad = -self.features % self.align
      if kc_pad:
        taps.append(jnp.zeros((*taps[0].shape[:2], kc_pad), taps[0].dtype))
      kernel_KCxF = jnp.pad(kernel_KCxF, ((0, kc_pad), (0, f_pad)))
    patches_BxTxKC = jnp.concatenate(taps, axis=-1)
    y = patch_matmul(patches_BxTxKC, kernel_KCxF)
    return y[..., :self.features] + bias
