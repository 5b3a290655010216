"""Backend-specific implementations of model math, chosen by config per backend.

A model names its kernels by field (`matmul_impl`, `conv_impl`); `"auto"` resolves here to the
implementation measured fastest on the backend that runs it, so the same config trains with the
XLA:CPU fast paths on a CPU and with XLA's own ops elsewhere. Every implementation of a kernel
computes the same function (tests check them against each other); they differ in speed, and in
float rounding only where XLA orders a sum differently.

| kernel | impl   | what                                             | measured on CPU          |
|--------|--------|--------------------------------------------------|--------------------------|
| matmul | patch  | `x @ w`, custom VJP materialising x^T (matmul.py) | ~2x the CNN train step   |
| matmul | xla    | `x @ w`, XLA's own dot and autodiff              | default elsewhere        |
| conv1d | im2col | strided slices + one matmul, widths padded to 8  | 6000 CNN steps 11.1->8.6 s |
| conv1d | xla    | `lax.conv_general_dilated`                       | default elsewhere        |

The CPU figures are in results/train_loop_structure.md and the docstrings of the implementations.
`iree` names StableHLO compiled by IREE (`research/serving/iree.py`): its direct 1-D convolutions
are slow (the MNIST-1D CNN at batch 256, one core of an Intel Xeon: 3,947 of 3,958 µs in the
three conv dispatches), and im2col's matmuls take it from 18.5 to 6.1 µs at batch 1 and from 13.1
to 1.3 µs per example at batch 256 (`iree-benchmark-module`). No other backend has been measured,
so `auto` gives it XLA's own ops.
"""

from __future__ import annotations

import jax

from research.errors import UserError

IMPLS: dict[str, tuple[str, ...]] = {
  "matmul": ("patch", "xla"),
  "conv1d": ("im2col", "xla"),
}

# kernel -> platform -> impl; platforms not listed get DEFAULT.
AUTO: dict[str, dict[str, str]] = {
  "matmul": {"cpu": "patch"},
  "conv1d": {"cpu": "im2col", "iree": "im2col"},
}
DEFAULT = "xla"


class KernelError(UserError, ValueError):
  """An unknown kernel or implementation name; the message lists the choices."""


def resolve(kernel: str, impl: str = "auto", platform: str | None = None) -> str:
  """The concrete implementation of `kernel` for `impl` ('auto' or a name) on `platform`.

  `platform` defaults to the platform of JAX's default backend ('cpu', 'gpu', 'tpu').
  """
  if kernel not in IMPLS:
    raise KernelError(f"unknown kernel {kernel!r}; kernels: {', '.join(IMPLS)}")
  if impl != "auto":
    if impl not in IMPLS[kernel]:
      raise KernelError(
        f"unknown {kernel} implementation {impl!r}; choose auto or one of: "
        f"{', '.join(IMPLS[kernel])}"
      )
    return impl
  platform = platform or _default_platform()
  return AUTO[kernel].get(platform, DEFAULT)


def _default_platform() -> str:
  """The platform "auto" resolves for when none is named (tests replace it to fake one)."""
  return jax.default_backend()
