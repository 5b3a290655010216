"""Matrix products with a backward pass laid out for the backend.

`matmul(x, w, impl)`: `impl="xla"` is `x @ w` with autodiff's own transpose; `impl="patch"` is the
same product whose backward pass materialises x^T first (`patch_matmul`), the fast path on
XLA:CPU. Forward values and gradients are the same function either way.
"""

from __future__ import annotations

import jax
from jax import lax

from research import kernels


@jax.custom_vjp
def patch_matmul(patches_MxI: jax.Array, kernel_IxO: jax.Array) -> jax.Array:
  """patches @ kernel, with a backward pass laid out for XLA:CPU's fast matmul path.

  Autodiff gives the kernel gradient as patches^T @ dY, a dot contracting the leading axis of
  both operands; XLA:CPU leaves that as a slow generic dot. Materialising patches^T first makes it
  a standard-layout matmul, which XLA hands to its fast library path (about 2x on the MNIST-1D
  CNN's train step). Forward values and gradients are unchanged.
  """
  return patches_MxI @ kernel_IxO


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


def matmul(x_MxI: jax.Array, w_IxO: jax.Array, impl: str = "auto") -> jax.Array:
  """x @ w over the last axis of x, by the implementation `impl` resolves to."""
  if kernels.resolve("matmul", impl) == "patch":
    return patch_matmul(x_MxI, w_IxO)
  return x_MxI @ w_IxO
