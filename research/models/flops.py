"""How every family counts its analytic FLOPs: the conventions, and the per-layer record.

Each family's count sits beside its module (`layer_flops` in linear.py, mlp.py, cnn.py, rnn.py;
transformer_flops.py) and is registered in `research.models.FAMILIES`, which
`research.cost.flops` reads. FLOPs follow XLA's convention so the two counts can be compared: a
multiply-add is 2 FLOPs, an elementwise add, multiply or max is 1, and exp/tanh/sigmoid are
transcendentals, not FLOPs. The analytic count is the primary figure; XLA's `cost_analysis` of
the compiled function (`research.cost.xla`) is the cross-check.

A train step's model part: every matmul costs its forward FLOPs again for the weight gradient,
and again for the input gradient unless its input is data (the first layer, the GRU's input
projection); every elementwise op costs about twice its forward FLOPs backward (the local
derivative, then the product with the incoming gradient) and every exp/tanh/sigmoid 3 more;
plus the loss and its gradient. The optimizer's update is not the model's: cost adds it.
Every count is a whole number of FLOPs held in a float, so sums are exact in any order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

# (model_config, input_shape, num_classes) -> forward FLOPs per example, layer by layer.
LayerCount = Callable[[Mapping[str, Any], Sequence[int], int], list["LayerFlops"]]


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


def dense(name: str, n_in: int, n_out: int, relu: bool, input_is_data: bool) -> LayerFlops:
  """A Dense layer with its bias, and a ReLU when `relu`."""
  return LayerFlops(name, 2.0 * n_in * n_out, n_out * (2 if relu else 1), input_is_data)


def conv_out(length: int, k: int, stride: int, pad: int) -> int:
  """Output positions of a convolution along one axis."""
  return (length + 2 * pad - k) // stride + 1


def valid_taps(length: int, k: int, stride: int, pad: int) -> int:
  """Kernel taps over all output positions that read the input, not its zero padding.

  Products with padding zeros are not arithmetic the model needs (XLA does not count them).
  """
  return sum(
    1
    for t in range(conv_out(length, k, stride, pad))
    for j in range(k)
    if 0 <= t * stride + j - pad < length
  )


def classifier_forward(
  layer_flops: LayerCount,
  model_config: Mapping[str, Any],
  input_shape: Sequence[int],
  num_classes: int,
  batch: int,
) -> float:
  """Forward FLOPs of `batch` examples of a classifier counted layer by layer."""
  return batch * sum(l.forward for l in layer_flops(model_config, input_shape, num_classes))


def classifier_train(
  layer_flops: LayerCount,
  model_config: Mapping[str, Any],
  input_shape: Sequence[int],
  num_classes: int,
  batch: int,
) -> dict[str, float]:
  """A classifier's train step over `batch` examples, all but the optimizer update, by part."""
  layers = layer_flops(model_config, input_shape, num_classes)
  return {
    "forward": batch * sum(l.forward for l in layers),
    "backward": batch * sum(l.backward for l in layers),
    "loss": batch * 6.0 * num_classes,  # log-softmax, one-hot product, its gradient
  }
