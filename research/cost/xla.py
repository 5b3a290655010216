"""XLA's view of a compiled function: its FLOP count, bytes and memory, the cross-check of the
analytic counts in `research.cost.flops`."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from research import kernels


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


def xla_flops(
  model_config: Mapping[str, Any],
  input_shape: Sequence[int],
  num_classes: int,
  batch: int,
  optimizer: Any,
) -> dict[str, Any]:
  """XLA's FLOPs for the forward pass and the train step at `batch`, with notes.

  Two adjustments, both measured: the 1-D CNN is counted with `conv_impl="xla"` (the im2col form
  that trains faster on CPU pads its matmuls to multiples of 8, extra work that is not the model's;
  its own count is reported beside), and a GRU's `lax.scan` body is counted once by XLA whatever
  the trip count, so the count is extrapolated from unroll=1 and unroll=2 to all steps.
  """
  from research.models import build_model
  from research.training.step import create_train_state, make_train_step

  config = dict(model_config)
  notes = []
  tokens = config["name"] == "transformer"

  def count(cfg):
    model = build_model(cfg, num_classes)
    if tokens:  # next-token prediction: int32 windows in, one target per position
      x = jnp.zeros((batch, *input_shape), jnp.int32)
      y = x
    else:
      x = jnp.zeros((batch, *input_shape), jnp.float32)
      y = jnp.zeros((batch,), jnp.int32)
    state = create_train_state(model, optimizer, x[:1], jax.random.key(0))
    return (
      compiled_cost(model.apply, state.params, x)["flops"],
      compiled_cost(make_train_step(model, optimizer), state, (x, y))["flops"],
    )

  out: dict[str, Any] = {}
  if (
    config["name"] == "cnn1d"
    and kernels.resolve("conv1d", config.get("conv_impl", "auto")) != "xla"
  ):
    out["implementation_forward"], out["implementation_train_step"] = count(config)
    config["conv_impl"] = "xla"
    notes.append(
      "counted with conv_impl=xla; the im2col implementation that runs pads each "
      "conv matmul to multiples of 8 and does the implementation_* FLOPs"
    )
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
