"""Analytic FLOPs of a forward pass and a train step, for every model family behind one signature.

`forward_flops(model_config, input_shape, num_classes, batch)` and `train_step_flops(...)` take
the same arguments whatever the family. Each family's count sits beside its module and is read
here from the models' registry (`research.models.FAMILIES`; conventions, XLA's, in
research/models/flops.py); this module adds what is not the model's: the optimizer's
per-parameter update. XLA's `cost_analysis` of the compiled function (`research.cost.xla`) is
the cross-check.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from research.cost import CostError
from research.models import FAMILIES, Family
from research.models.flops import LayerFlops

# Per-parameter FLOPs of one optimizer step (elementwise ops on each parameter), plus 2 for the
# gradient-norm metric: Adam's moments (3 + 4), bias corrections folded into the step (2), the
# step m / (sqrt(v) + eps) * lr (3) and the update (1).
OPTIMIZER_FLOPS_PER_PARAM = {"adam": 15, "adamw": 17, "sgd": 4}


def optimizer_flops_per_param(optimizer: str) -> int:
  return OPTIMIZER_FLOPS_PER_PARAM.get(optimizer, OPTIMIZER_FLOPS_PER_PARAM["adam"])


def _family(model_config: Mapping[str, Any]) -> Family:
  family = FAMILIES.get(model_config["name"])
  if family is None:
    raise CostError(f"no analytic FLOP count for model {model_config['name']!r}")
  return family


def layer_flops(
  model_config: Mapping[str, Any], input_shape: Sequence[int], num_classes: int
) -> list[LayerFlops]:
  """Forward FLOPs per example, layer by layer, for every family counted that way."""
  count = _family(model_config).layer_flops
  if count is None:
    raise CostError(f"no analytic FLOP count for model {model_config['name']!r}")
  return count(model_config, input_shape, num_classes)


def forward_flops(
  model_config: Mapping[str, Any], input_shape: Sequence[int], num_classes: int, batch: int = 1
) -> float:
  """Forward FLOPs of `batch` examples (a language model's: windows of `input_shape[0]` tokens)."""
  return _family(model_config).forward_flops(model_config, input_shape, num_classes, batch)


def train_step_terms(
  model_config: Mapping[str, Any],
  input_shape: Sequence[int],
  num_classes: int,
  batch: int,
  num_params: int,
  optimizer: str = "adam",
) -> dict[str, float]:
  """`train_step_flops` by part: the model's (forward, backward, loss, ...) and the optimizer's."""
  terms = _family(model_config).train_flops(model_config, input_shape, num_classes, batch)
  terms["optimizer"] = float(optimizer_flops_per_param(optimizer) * num_params)
  return terms


def train_step_flops(
  model_config: Mapping[str, Any],
  input_shape: Sequence[int],
  num_classes: int,
  batch: int,
  num_params: int,
  optimizer: str = "adam",
) -> float:
  """Forward + backward over the batch, the loss, and the optimizer update on `num_params`."""
  return sum(
    train_step_terms(model_config, input_shape, num_classes, batch, num_params, optimizer).values()
  )
