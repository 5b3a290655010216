"""The optimizers a config can name, built with Optax."""

from __future__ import annotations

import optax


def make_optimizer(
  name: str,
  learning_rate: float,
  b1: float = 0.9,
  b2: float = 0.999,
  weight_decay: float = 0.0,
  momentum: float = 0.9,
) -> optax.GradientTransformation:
  """The optimizers a config can name; PyTorch's Adam adds weight decay to the gradient (L2)."""
  if name == "adam":
    tx = optax.adam(learning_rate, b1=b1, b2=b2)
    return optax.chain(optax.add_decayed_weights(weight_decay), tx) if weight_decay else tx
  if name == "adamw":
    return optax.adamw(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay)
  if name == "sgd":
    return optax.sgd(learning_rate, momentum=momentum or None)
  raise ValueError(f"unknown optimizer {name!r}; choose one of: adam, adamw, sgd")
