"""Model registry: a config's `model.name` picks the family, its other fields are the module's."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.models.cnn import CNN1D, CNN2D
from research.models.linear import Logistic
from research.models.mlp import MLP
from research.models.rnn import BiGRU
from research.models.transformer import Transformer

MODELS: dict[str, type[nn.Module]] = {
    "logistic": Logistic,
    "mlp": MLP,
    "cnn1d": CNN1D,
    "cnn2d": CNN2D,
    "gru": BiGRU,
    "transformer": Transformer,
}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class ModelError(ValueError):
  """A model config that names no model or fields the model lacks."""


def build_model(model_config: Mapping[str, Any], num_classes: int) -> nn.Module:
  """Instantiates the module named by `model_config["name"]` with the remaining fields."""
  fields = dict(model_config)
  name = fields.pop("name", None)
  if name not in MODELS:
    raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
  cls = MODELS[name]
  known = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ModelError(f"model {name!r} has no field(s) {', '.join(unknown)}; "
                     f"its fields are: {', '.join(sorted(known))}")
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
  return cls(num_classes=num_classes, **fields)


def count_params(params: Any) -> int:
  """Number of scalar parameters in a pytree."""
  return sum(int(x.size) for x in jax.tree.leaves(params))
