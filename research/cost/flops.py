"""Analytic FLOPs of every model family, the Transformer included, behind one signature.

`forward_flops(model_config, input_shape, num_classes, batch)` and `train_step_flops(...)` take
the same arguments whatever the family: classifiers are counted layer by layer here, the
Transformer term by term in `research.cost.transformer`. FLOPs follow XLA's convention so the
two counts can be compared: a multiply-add is 2 FLOPs, an
elementwise add, multiply or max is 1, and exp/tanh/sigmoid are transcendentals, not FLOPs. The
analytic count (layer by layer, from the model config) is the primary figure; XLA's
`cost_analysis` of the compiled function is the cross-check.

The training step's analytic count: every matmul costs its forward FLOPs again for the weight
gradient, and again for the input gradient unless its input is data (the first layer, the GRU's
input projection); every elementwise op costs about twice its forward FLOPs backward (the local
derivative, then the product with the incoming gradient) and every exp/tanh/sigmoid 3 more;
plus the loss and its gradient, and the
optimizer's per-parameter update (Adam: moments, bias correction, step; the gradient norm metric).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from research.cost import CostError


@dataclasses.dataclass(frozen=True)
class LayerFlops:
  """One layer's forward FLOPs per example, split so the backward pass can be derived."""

  name: str
  matmul: float  # 2 * multiply-adds
  elementwise: float  # bias adds, activations, gate arithmetic
  input_is_data: bool  # no input gradient needed
  transcendentals: float = 0.0

  @property
  def forward(self) -> float:
    return self.matmul + self.elementwise

  @property
  def backward(self) -> float:
    # A transcendental's derivative comes from its saved output in 3 FLOPs (s * (1 - s) * g,
    # (1 - t * t) * g).
    return (
      self.matmul * (1 if self.input_is_data else 2)
      + 2 * self.elementwise
      + 3 * self.transcendentals
    )


def _dense(name: str, n_in: int, n_out: int, relu: bool, input_is_data: bool) -> LayerFlops:
  return LayerFlops(name, 2.0 * n_in * n_out, n_out * (2 if relu else 1), input_is_data)


def _conv_out(length: int, k: int, stride: int, pad: int) -> int:
  return (length + 2 * pad - k) // stride + 1


def _valid_taps(length: int, k: int, stride: int, pad: int) -> int:
  """Kernel taps over all output positions that read the input, not its zero padding.

  Products with padding zeros are not arithmetic the model needs (XLA does not count them).
  """
  return sum(
    1
    for t in range(_conv_out(length, k, stride, pad))
    for j in range(k)
    if 0 <= t * stride + j - pad < length
  )


def layer_flops(
  model_config: Mapping[str, Any], input_shape: Sequence[int], num_classes: int
) -> list[LayerFlops]:
  """Forward FLOPs per example, layer by layer, for every model in the registry."""
  name = model_config["name"]
  n_in = int(np.prod(input_shape))
  if name == "logistic":
    return [_dense("dense", n_in, num_classes, False, True)]
  if name == "mlp":
    hidden = int(model_config.get("hidden", 100))
    l1 = _dense("dense_in", n_in, hidden, True, True)
    l2 = _dense("dense_residual", hidden, hidden, True, False)
    l2 = dataclasses.replace(l2, elementwise=l2.elementwise + hidden)  # h + relu(...)
    return [l1, l2, _dense("dense_out", hidden, num_classes, False, False)]
  if name == "cnn1d":
    channels = int(model_config.get("channels", 25))
    length, c_in, layers = int(input_shape[0]), 1, []
    for i, k in enumerate((5, 3, 3)):
      out = _conv_out(length, k, 2, 1)
      layers.append(
        LayerFlops(
          f"conv{i + 1}",
          2.0 * _valid_taps(length, k, 2, 1) * c_in * channels,
          2.0 * out * channels,
          input_is_data=(i == 0),
        )
      )
      length, c_in = out, channels
    layers.append(_dense("dense", length * channels, num_classes, False, False))
    return layers
  if name == "cnn2d":
    c1, c2 = (int(c) for c in model_config.get("channels", (16, 32)))
    h, w = int(input_shape[0]), int(input_shape[1])
    c_in = int(input_shape[2]) if len(input_shape) > 2 else 1
    taps1 = _valid_taps(h, 3, 1, 1) * _valid_taps(w, 3, 1, 1)
    l1 = LayerFlops("conv1", 2.0 * taps1 * c_in * c1, 2.0 * h * w * c1, True)
    h2, w2 = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
    taps2 = _valid_taps(h, 3, 2, 1) * _valid_taps(w, 3, 2, 1)
    l2 = LayerFlops("conv2", 2.0 * taps2 * c1 * c2, 2.0 * h2 * w2 * c2, False)
    return [l1, l2, _dense("dense", h2 * w2 * c2, num_classes, False, False)]
  if name == "gru":
    hid = int(model_config.get("hidden", 6))
    steps, n_feat = int(input_shape[0]), (int(np.prod(input_shape[1:])) or 1)
    per_dir_steps = 2 * steps
    # Input projection (all steps at once) with its bias.
    proj = LayerFlops(
      "gru_input_projection",
      per_dir_steps * 2.0 * n_feat * 3 * hid,
      per_dir_steps * 3.0 * hid,
      True,
    )
    # Per step and direction: hidden projection + bias; r, z: one add each, then a sigmoid,
    # 1 / (1 + exp(-x)), which is 3 FLOPs around its exp; n: r * hid_n, + in_n (+ tanh);
    # h' = (1 - z) * n + z * h: four ops.
    cell = LayerFlops(
      "gru_recurrence",
      per_dir_steps * 2.0 * hid * 3 * hid,
      per_dir_steps * (3 * hid + 2 * hid + 2 * 3 * hid + 2 * hid + 4 * hid),
      False,
      transcendentals=per_dir_steps * 3.0 * hid,
    )
    return [proj, cell, _dense("dense", steps * 2 * hid, num_classes, False, False)]
  raise CostError(f"no analytic FLOP count for model {name!r}")


# Per-parameter FLOPs of one optimizer step (elementwise ops on each parameter), plus 2 for the
# gradient-norm metric: Adam's moments (3 + 4), bias corrections folded into the step (2), the
# step m / (sqrt(v) + eps) * lr (3) and the update (1).
OPTIMIZER_FLOPS_PER_PARAM = {"adam": 15, "adamw": 17, "sgd": 4}


def optimizer_flops_per_param(optimizer: str) -> int:
  return OPTIMIZER_FLOPS_PER_PARAM.get(optimizer, OPTIMIZER_FLOPS_PER_PARAM["adam"])


def forward_flops(
  model_config: Mapping[str, Any], input_shape: Sequence[int], num_classes: int, batch: int = 1
) -> float:
  """Forward FLOPs of `batch` examples (a language model's: windows of `input_shape[0]` tokens)."""
  if model_config["name"] == "transformer":
    from research.cost import transformer

    config = {**model_config, "num_classes": num_classes}
    return transformer.sequence_forward_flops(config, batch, int(input_shape[0]))
  return batch * sum(l.forward for l in layer_flops(model_config, input_shape, num_classes))


def train_step_flops(
  model_config: Mapping[str, Any],
  input_shape: Sequence[int],
  num_classes: int,
  batch: int,
  num_params: int,
  optimizer: str = "adam",
) -> float:
  """Forward + backward over the batch, the loss, and the optimizer update on `num_params`."""
  if model_config["name"] == "transformer":
    from research.cost import transformer

    config = {**model_config, "num_classes": num_classes}
    terms = transformer.train_step_terms(config, batch, int(input_shape[0]), optimizer)
    terms["optimizer"] = float(optimizer_flops_per_param(optimizer) * num_params)
    return sum(terms.values())
  layers = layer_flops(model_config, input_shape, num_classes)
  per_example = sum(l.forward + l.backward for l in layers)
  loss = 6.0 * num_classes  # log-softmax, one-hot product, its gradient
  return batch * (per_example + loss) + optimizer_flops_per_param(optimizer) * num_params
