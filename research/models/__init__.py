"""Model registry: a config's `model.name` picks the family, its other fields are the module's.

Models are pure math: Flax modules that know nothing of training, storage, logging or backends.
How a matmul or a convolution runs is the kernels' choice (`research.kernels`): a model names it
by field (`matmul_impl`, `conv_impl`), "auto" meaning the backend's fastest.

Shape suffixes (`x_BxLxC`: a batch of length-L signals with C channels), one meaning per letter:

  B   batch (examples, or sequences)
  L   length of a 1-D input signal (MNIST-1D's 40 positions)
  Y X rows and columns of an image
  C   input channels of a convolution          F   its output channels (features)
  K   taps of a convolution kernel             KC  taps x channels, one im2col row
  I   input features of a dense layer or cell  O   output features of a dense layer
  M   rows of a matmul (leading axes flattened)
  H   hidden units of a recurrent cell (3H: its reset, update and candidate gates)
  T   positions of a whole sequence: a GRU's steps, a Transformer window, the keys a query sees
  S   positions processed in this call (queries)    P   prompt positions    G   generated tokens
  D   a Transformer's residual width (d_model)      N   attention heads     Dh  head width, D / N
  V   vocabulary
  J   train steps in one compiled chunk
  2, 3H, ...  literal sizes (2: the two directions of a bidirectional recurrence)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from research import kernels
from research.models.cnn import CNN1D, CNN2D
from research.models.layers import ModelError
from research.models.linear import Logistic
from research.models.mlp import MLP
from research.models.rnn import BiGRU
from research.models.transformer import Transformer, init_cache

MODELS: dict[str, type[nn.Module]] = {
  "logistic": Logistic,
  "mlp": MLP,
  "cnn1d": CNN1D,
  "cnn2d": CNN2D,
  "gru": BiGRU,
  "transformer": Transformer,
}

# Models that decode token by token: their class -> (model, batch) -> an empty KV cache.
CACHE_BUILDERS: dict[type[nn.Module], Any] = {Transformer: init_cache}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


# Model fields that name a kernel implementation (research.kernels), and which kernel.
KERNEL_FIELDS = {"matmul_impl": "matmul", "conv_impl": "conv1d"}


def build_model(
  model_config: Mapping[str, Any], num_classes: int, platform: str | None = None
) -> nn.Module:
  """Instantiates the module named by `model_config["name"]` with the remaining fields.

  Kernel fields are checked here; with `platform` ('cpu', 'gpu', ...) "auto" is resolved for it,
  otherwise when the model is traced, for JAX's default backend.
  """
  fields = dict(model_config)
  name = fields.pop("name", None)
  if name not in MODELS:
    raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
  cls = MODELS[name]
  known = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ModelError(
      f"model {name!r} has no field(s) {', '.join(unknown)}; "
      f"its fields are: {', '.join(sorted(known))}"
    )
  if "dtype" in fields:
    dtype = fields["dtype"]
    if dtype in (None, ""):
      fields["dtype"] = None
    elif dtype in _DTYPES:
      fields["dtype"] = _DTYPES[dtype]
    else:
      raise ModelError(f"unknown model.dtype {dtype!r}; choose one of: {', '.join(_DTYPES)}")
  for key, value in fields.items():
    if isinstance(value, list):
      fields[key] = tuple(value)
  for key, kernel in KERNEL_FIELDS.items():
    if key in fields:
      try:
        resolved = kernels.resolve(kernel, fields[key], platform or "cpu")
      except kernels.KernelError as e:
        raise ModelError(f"model.{key}: {e}") from None
      if platform:
        fields[key] = resolved
  model = cls(num_classes=num_classes, **fields)
  return for_platform(model, platform) if platform else model


def for_platform(model: nn.Module, platform: str) -> nn.Module:
  """`model` with every "auto" kernel field resolved for `platform` (same params, same math)."""
  resolved = {
    key: kernels.resolve(kernel, getattr(model, key), platform)
    for key, kernel in KERNEL_FIELDS.items()
    if hasattr(model, key)
  }
  return model.clone(**resolved) if resolved else model


def count_params(params: Any) -> int:
  """Number of scalar parameters in a pytree."""
  return sum(int(x.size) for x in jax.tree.leaves(params))


def tree_bytes(tree: Any) -> int:
  """Bytes held by the arrays of a pytree (params, optimizer state)."""
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def init_decode_cache(model: nn.Module, batch: int) -> Any:
  """An empty decoding cache for `model` at `batch`, from its class's registered builder."""
  for cls, builder in CACHE_BUILDERS.items():
    if isinstance(model, cls):
      return builder(model, batch)
  raise ModelError(
    f"model {type(model).__name__} cannot decode token by token; "
    f"decoder models: {', '.join(c.__name__ for c in CACHE_BUILDERS)}"
  )
