"""Training against inference in FLOPs, bytes, memory, time, energy and money.

FLOPs follow XLA's convention so the two counts can be compared: a multiply-add is 2 FLOPs, an
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
import math
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class CostError(ValueError):
  """A cost that cannot be computed as asked (unknown profile, missing run); says what to do."""


# ----------------------------------------------------------------------------------------------
# Analytic FLOPs


@dataclasses.dataclass(frozen=True)
class LayerFlops:
  """One layer's forward FLOPs per example, split so the backward pass can be derived."""
  name: str
  matmul: float          # 2 * multiply-adds
  elementwise: float     # bias adds, activations, gate arithmetic
  input_is_data: bool    # no input gradient needed
  transcendentals: float = 0.0

  @property
  def forward(self) -> float:
    return self.matmul + self.elementwise

  @property
  def backward(self) -> float:
    # A transcendental's derivative comes from its saved output in 3 FLOPs (s * (1 - s) * g,
    # (1 - t * t) * g).
    return (self.matmul * (1 if self.input_is_data else 2) + 2 * self.elementwise
            + 3 * self.transcendentals)


def _dense(name: str, n_in: int, n_out: int, relu: bool, input_is_data: bool) -> LayerFlops:
  return LayerFlops(name, 2.0 * n_in * n_out, n_out * (2 if relu else 1), input_is_data)


def _conv_out(length: int, k: int, stride: int, pad: int) -> int:
  return (length + 2 * pad - k) // stride + 1


def _valid_taps(length: int, k: int, stride: int, pad: int) -> int:
  """Kernel taps over all output positions that read the input, not its zero padding.

  Products with padding zeros are not arithmetic the model needs (XLA does not count them).
  """
  return sum(1 for t in range(_conv_out(length, k, stride, pad)) for j in range(k)
             if 0 <= t * stride + j - pad < length)


def layer_flops(model_config: Mapping[str, Any], input_shape: Sequence[int],
                num_classes: int) -> list[LayerFlops]:
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
      layers.append(LayerFlops(f"conv{i + 1}", 2.0 * _valid_taps(length, k, 2, 1) * c_in * channels,
                               2.0 * out * channels, input_is_data=(i == 0)))
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
    proj = LayerFlops("gru_input_projection", per_dir_steps * 2.0 * n_feat * 3 * hid,
                      per_dir_steps * 3.0 * hid, True)
    # Per step and direction: hidden projection + bias; r, z: one add each, then a sigmoid,
    # 1 / (1 + exp(-x)), which is 3 FLOPs around its exp; n: r * hid_n, + in_n (+ tanh);
    # h' = (1 - z) * n + z * h: four ops.
    cell = LayerFlops("gru_recurrence", per_dir_steps * 2.0 * hid * 3 * hid,
                      per_dir_steps * (3 * hid + 2 * hid + 2 * 3 * hid + 2 * hid + 4 * hid), False,
                      transcendentals=per_dir_steps * 3.0 * hid)
    return [proj, cell, _dense("dense", steps * 2 * hid, num_classes, False, False)]
  raise CostError(f"no analytic FLOP count for model {name!r}")


# Per-parameter FLOPs of one optimizer step (elementwise ops on each parameter), plus 2 for the
# gradient-norm metric: Adam's moments (3 + 4), bias corrections folded into the step (2), the
# step m / (sqrt(v) + eps) * lr (3) and the update (1).
OPTIMIZER_FLOPS_PER_PARAM = {"adam": 15, "adamw": 17, "sgd": 4}


def forward_flops(layers: Sequence[LayerFlops], batch: int = 1) -> float:
  return batch * sum(l.forward for l in layers)


def train_step_flops(layers: Sequence[LayerFlops], batch: int, num_params: int,
                     num_classes: int, optimizer: str = "adam") -> float:
  """Forward + backward over the batch, the loss, and the optimizer update."""
  per_example = sum(l.forward + l.backward for l in layers)
  loss = 6.0 * num_classes  # log-softmax, one-hot product, its gradient
  opt = OPTIMIZER_FLOPS_PER_PARAM.get(optimizer, OPTIMIZER_FLOPS_PER_PARAM["adam"])
  return batch * (per_example + loss) + opt * num_params


# ----------------------------------------------------------------------------------------------
# XLA's view: compiled cost and memory


def compiled_cost(fn, *args, **kwargs) -> dict[str, float]:
  """FLOPs, transcendentals, bytes accessed and memory of `jit(fn)` at these arguments."""
  compiled = jax.jit(fn, **kwargs).lower(*args).compile()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  out = {"flops": float(cost.get("flops", float("nan"))),
         "transcendentals": float(cost.get("transcendentals", 0.0)),
         "bytes_accessed": float(cost.get("bytes accessed", float("nan")))}
  memory = compiled.memory_analysis()
  if memory is not None:
    for field in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                  "temp_size_in_bytes", "generated_code_size_in_bytes"):
      out[field.replace("_size_in_bytes", "_bytes")] = float(getattr(memory, field, 0) or 0)
    out["peak_bytes"] = (out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"]
                         + out["temp_bytes"])
  return out


def tree_bytes(tree: Any) -> int:
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------------------------
# Hardware profiles


@dataclasses.dataclass(frozen=True)
class HardwareProfile:
  """Peak arithmetic and power of a machine, and what an hour of it costs.

  Named accelerator figures are the vendors' dense peaks; price and power are assumptions the
  user overrides (--price-per-hour, --power-watts). `mfu_*` are the model-FLOP utilizations
  assumed when a profile is not the machine the times were measured on.
  """
  name: str
  peak_flops: float
  memory_bandwidth: float | None
  power_watts: float
  price_per_hour: float
  precision: str = "float32"
  mfu_train: float = 0.3
  mfu_batch: float = 0.3
  mfu_realtime: float = 0.01
  measured: bool = False


PROFILES: dict[str, HardwareProfile] = {
    "h100-sxm-bf16": HardwareProfile("h100-sxm-bf16", 989e12, 3.35e12, 700.0, 3.00, "bfloat16"),
    "h100-sxm-fp32": HardwareProfile("h100-sxm-fp32", 67e12, 3.35e12, 700.0, 3.00),
    "a100-sxm-bf16": HardwareProfile("a100-sxm-bf16", 312e12, 2.04e12, 400.0, 1.50, "bfloat16"),
    "l4-bf16": HardwareProfile("l4-bf16", 121e12, 0.3e12, 72.0, 0.70, "bfloat16"),
}


def get_profile(name: str, price_per_hour: float | None = None,
                power_watts: float | None = None) -> HardwareProfile:
  if name not in PROFILES:
    raise CostError(f"unknown hardware profile {name!r}; choose one of: "
                    f"{', '.join(sorted(PROFILES))} (or 'this-machine')")
  p = PROFILES[name]
  return dataclasses.replace(p, price_per_hour=p.price_per_hour if price_per_hour is None
                             else price_per_hour,
                             power_watts=p.power_watts if power_watts is None else power_watts)


def measure_peak_flops(n: int = 1024, repeats: int = 10, dtype=jnp.float32,
                       device: jax.Device | None = None) -> dict[str, float]:
  """Achieved FLOP/s of a large square matmul: this machine's practical peak."""
  device = device or jax.devices()[0]
  key = jax.random.key(0)
  a = jax.device_put(jax.random.normal(key, (n, n), dtype), device)
  b = jax.device_put(jax.random.normal(jax.random.fold_in(key, 1), (n, n), dtype), device)
  matmul = jax.jit(jnp.matmul).lower(a, b).compile()
  matmul(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    matmul(a, b).block_until_ready()
    times.append(time.perf_counter() - t)
  best = min(times)
  return {"peak_flops": 2.0 * n ** 3 / best, "matmul_n": n, "dtype": jnp.dtype(dtype).name,
          "median_flops": 2.0 * n ** 3 / float(np.median(times))}


def this_machine_profile(peak_flops: float, power_watts: float, price_per_hour: float
                         ) -> HardwareProfile:
  return HardwareProfile("this-machine", peak_flops, None, power_watts, price_per_hour,
                         measured=True)


# ----------------------------------------------------------------------------------------------
# Break-even


def break_even(training_cost: float, cost_per_prediction: float) -> float:
  """Predictions after which cumulative inference cost equals the training run's cost."""
  if cost_per_prediction <= 0 or not math.isfinite(cost_per_prediction):
    raise CostError(f"cost per prediction must be positive and finite, got {cost_per_prediction}")
  if training_cost < 0:
    raise CostError(f"training cost must be non-negative, got {training_cost}")
  return training_cost / cost_per_prediction


def energy_and_money(seconds: float, profile: HardwareProfile) -> dict[str, float]:
  return {"joules": seconds * profile.power_watts,
          "dollars": seconds * profile.price_per_hour / 3600.0}


# ----------------------------------------------------------------------------------------------
# XLA cross-check on the implementation of the same math that XLA counts correctly


def xla_flops(model_config: Mapping[str, Any], input_shape: Sequence[int], num_classes: int,
              batch: int, optimizer: Any) -> dict[str, Any]:
  """XLA's FLOPs for the forward pass and the train step at `batch`, with notes.

  Two adjustments, both measured: the 1-D CNN is counted with `conv_impl="xla"` (the im2col form
  that trains faster pads its matmuls to multiples of 8, extra work that is not the model's; its
  own count is reported beside), and a GRU's `lax.scan` body is counted once by XLA whatever the
  trip count, so the count is extrapolated from unroll=1 and unroll=2 to all steps.
  """
  from research.models import build_model
  from research.train_step import create_train_state, make_train_step
  config = dict(model_config)
  notes = []

  def count(cfg):
    model = build_model(cfg, num_classes)
    x = jnp.zeros((batch, *input_shape), jnp.float32)
    y = jnp.zeros((batch,), jnp.int32)
    state = create_train_state(model, optimizer, x[:1], jax.random.key(0))
    return (compiled_cost(model.apply, state.params, x)["flops"],
            compiled_cost(make_train_step(model, optimizer), state, (x, y))["flops"])

  out: dict[str, Any] = {}
  if config["name"] == "cnn1d" and config.get("conv_impl", "im2col") != "xla":
    out["implementation_forward"], out["implementation_train_step"] = count(config)
    config["conv_impl"] = "xla"
    notes.append("counted with conv_impl=xla; the im2col implementation that runs pads each "
                 "conv matmul to multiples of 8 and does the implementation_* FLOPs")
  if config["name"] == "gru":
    steps = int(input_shape[0])
    f1, t1 = count({**config, "unroll": 1})
    f2, t2 = count({**config, "unroll": 2})
    out["forward"], out["train_step"] = f1 + (steps - 1) * (f2 - f1), t1 + (steps - 1) * (t2 - t1)
    notes.append(f"XLA counts a scan body once; extrapolated from unroll 1 and 2 to {steps} steps")
  else:
    out["forward"], out["train_step"] = count(config)
  out["notes"] = notes
  return out
