"""Model registry: a config's `model.name` picks the family, its other fields are the module's.

Models are pure math: Flax modules that know nothing of training, storage, logging or backends.
How a matmul or a convolution runs is the kernels' choice (`research.kernels`): a model names it
by field (`matmul_impl`, `conv_impl`), "auto" meaning the backend's fastest. Each family's
analytic FLOP count sits beside its module and is registered with it in `FAMILIES`, which
`research.cost` reads (conventions: research/models/flops.py).

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
import functools
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from research import kernels
from research.models import cnn, linear, mlp, rnn, transformer_flops
from research.models.flops import LayerCount, classifier_forward, classifier_train
from research.models.layers import ModelError
from research.models.transformer import Transformer, init_cache


@dataclasses.dataclass(frozen=True)
class Family:
  """A model family: its module, and its analytic FLOPs.

  `forward_flops(model_config, input_shape, num_classes, batch)` counts the forward pass of a
  batch; `train_flops(...)` (same arguments) a train step by part, all but the optimizer update;
  `layer_flops(model_config, input_shape, num_classes)` the forward pass per example, layer by
  layer (classifiers). `scan_axis`: the input axis (per example) a `lax.scan` steps over, with
  the module's `unroll` field as steps per iteration; XLA's cost analysis counts a scan body
  once, so `research.cost.xla` extrapolates over it.
  """

  module: type[nn.Module]
  forward_flops: Callable[[Mapping[str, Any], Sequence[int], int, int], float]
  train_flops: Callable[[Mapping[str, Any], Sequence[int], int, int], dict[str, float]]
  layer_flops: LayerCount | None = None
  scan_axis: int | None = None


def _classifier(module: type[nn.Module], layer_flops: LayerCount, **fields: Any) -> Family:
  forward = functools.partial(classifier_forward, layer_flops)
  train = functools.partial(classifier_train, layer_flops)
  return Family(module, forward, train, layer_flops, **fields)


FAMILIES: dict[str, Family] = {
  "logistic": _classifier(linear.Logistic, linear.layer_flops),
  "mlp": _classifier(mlp.MLP, mlp.layer_flops),
  "cnn1d": _classifier(cnn.CNN1D, cnn.cnn1d_layer_flops),
  "cnn2d": _classifier(cnn.CNN2D, cnn.cnn2d_layer_flops),
  "gru": _classifier(rnn.BiGRU, rnn.layer_flops, scan_axis=0),
  "transformer": Family(
    Transformer, transformer_flops.forward_flops, transformer_flops.train_flops
  ),
}
MODELS: dict[str, type[nn.Module]] = {name: f.module for name, f in FAMILIES.items()}

# Models that decode token by token: their class -> (model, batch) -> an empty KV cache.
CACHE_BUILDERS: dict[type[nn.Module], Any] = {Transformer: init_cache}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


# Model fields that name a kernel implementation (research.kernels), and which kernel.
KERNEL_FIELDS = {"matmul_impl": "matmul", "conv_impl": "conv1d"}
# Kernel implementations that do arithmetic the model does not need, and what: XLA's FLOP count
# of a model running one is not the model's, so `research.cost.xla` counts it with XLA's own op.
PADDED_KERNELS = {("conv1d", "im2col"): "pads each conv matmul to multiples of 8"}


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
