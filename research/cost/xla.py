"""XLA's view of a compiled function: its FLOP count, bytes and memory, the cross-check of the
analytic counts in `research.cost.flops`. Nothing here knows a model family or imports training:
what a family needs counted differently is declared in `research.models`, and the train step is
the caller's."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax

from research import kernels
from research.models import FAMILIES, KERNEL_FIELDS, PADDED_KERNELS, build_model


def compiled_cost(fn, *args, **kwargs) -> dict[str, float]:
  """FLOPs, transcendentals, bytes accessed and memory of `jit(fn)` at these arguments."""
  compiled = jax.jit(fn, **kwargs).lower(*args).compile()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  out = {
    "flops": float(cost.get("flops", float("nan"))),
    "transcendentals": float(cost.get("transcendentals", 0.0)),
    "bytes_accessed": float(cost.get("bytes accessed", float("nan"))),
  }
  memory = compiled.memory_analysis()
  if memory is not None:
    for field in (
      "argument_size_in_bytes",
      "output_size_in_bytes",
      "alias_size_in_bytes",
      "temp_size_in_bytes",
      "generated_code_size_in_bytes",
    ):
      out[field.replace("_size_in_bytes", "_bytes")] = float(getattr(memory, field, 0) or 0)
    out["peak_bytes"] = (
      out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"] + out["temp_bytes"]
    )
  return out


# (model, a batch of inputs) -> (train_step, its state): the step `train_step(state, (x, y))` that
# training runs (research.training.step), built by the caller, since cost imports no training.
TrainStepFor = Callable[[Any, Any], tuple[Callable[..., Any], Any]]


def xla_flops(
  model_config: Mapping[str, Any],
  num_classes: int,
  batch: tuple[Any, Any],
  train_step_for: TrainStepFor,
) -> dict[str, Any]:
  """XLA's FLOPs for the forward pass and the train step on `batch` (inputs, targets), with notes.

  Two adjustments, both measured and declared by the models' registry: a kernel implementation
  that pads its work (`PADDED_KERNELS`: the 1-D CNN's im2col, which trains faster on CPU, pads
  its matmuls to multiples of 8) is replaced by XLA's own op for the count, its own count
  reported beside; and a family that runs a `lax.scan` (`Family.scan_axis`: the GRU) is counted
  at unroll=1 and unroll=2 and extrapolated to all steps, since XLA counts a scan body once
  whatever the trip count.
  """
  config = dict(model_config)
  family = FAMILIES.get(config["name"])
  x, y = batch
  notes = []

  def count(cfg):
    model = build_model(cfg, num_classes)
    step, state = train_step_for(model, x)
    return (
      compiled_cost(model.apply, state.params, x)["flops"],
      compiled_cost(step, state, (x, y))["flops"],
    )

  out: dict[str, Any] = {}
  padded = _padded_kernels(family.module, config) if family else []
  if padded:
    out["implementation_forward"], out["implementation_train_step"] = count(config)
    for key, impl, what in padded:
      config[key] = "xla"
      notes.append(
        f"counted with {key}=xla; the {impl} implementation that runs {what} "
        "and does the implementation_* FLOPs"
      )
  if family and family.scan_axis is not None:
    steps = int(x.shape[1 + family.scan_axis])
    f1, t1 = count({**config, "unroll": 1})
    f2, t2 = count({**config, "unroll": 2})
    out["forward"], out["train_step"] = f1 + (steps - 1) * (f2 - f1), t1 + (steps - 1) * (t2 - t1)
    notes.append(f"XLA counts a scan body once; extrapolated from unroll 1 and 2 to {steps} steps")
  else:
    out["forward"], out["train_step"] = count(config)
  out["notes"] = notes
  return out


def _padded_kernels(module: type, config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
  """(field, implementation, what it pads) for each kernel field of `module` that `config`
  resolves to a padding implementation on this backend."""
  defaults = {f.name: f.default for f in dataclasses.fields(module)}
  found = []
  for key, kernel in KERNEL_FIELDS.items():
    if key in defaults:
      impl = kernels.resolve(kernel, config.get(key, defaults[key]))
      if (kernel, impl) in PADDED_KERNELS:
        found.append((key, impl, PADDED_KERNELS[kernel, impl]))
  return found
