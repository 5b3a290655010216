"""What the compiled programs count: FLOPs per example and per run (analytic, layer by layer, and
XLA's own count) and memory (XLA's memory analysis of the compiled train step and apply)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np

from research.cost import flops, xla
from research.models import count_params, tree_bytes
from research.training.optimizers import optimizer_from_config
from research.training.step import create_train_state, make_train_step


def train_step_for(optimizer: Any) -> xla.TrainStepFor:
  """The train step training runs, for XLA to count (research.cost imports no training)."""

  def build(model: Any, x: Any) -> tuple[Any, Any]:
    state = create_train_state(model, optimizer, x[:1], jax.random.key(0))
    return make_train_step(model, optimizer), state

  return build


def count_flops(config: ml_collections.ConfigDict, run: Any, steps: int) -> dict[str, Any]:
  """FLOPs per example and per run, analytic (layer by layer) and XLA's, and their ratios."""
  batch, optimizer = config.batch_size, optimizer_from_config(config)
  layers = flops.layer_flops(config.model, run.input_shape, run.num_classes)
  fwd_ex = flops.forward_flops(config.model, run.input_shape, run.num_classes, 1)
  step_flops = flops.train_step_flops(
    config.model,
    run.input_shape,
    run.num_classes,
    batch,
    count_params(run.params),
    config.optimizer.name,
  )
  x_b = np.zeros((batch, *run.input_shape), np.float32)
  xla_count = xla.xla_flops(
    config.model, run.num_classes, (x_b, np.zeros(batch, np.int32)), train_step_for(optimizer)
  )
  return {
    "analytic_layers": [
      dict(dataclasses.asdict(l), forward=l.forward, backward=l.backward) for l in layers
    ],
    "forward_per_example": fwd_ex,
    "train_step": step_flops,
    "train_step_per_example": step_flops / batch,
    "train_to_forward_ratio": step_flops / (batch * fwd_ex),
    "training_run_total": step_flops * steps,
    "xla": {
      **xla_count,
      "forward_per_example": xla_count["forward"] / batch,
      "train_to_forward_ratio": xla_count["train_step"] / xla_count["forward"],
    },
    "xla_over_analytic": {
      "forward": xla_count["forward"] / (batch * fwd_ex),
      "train_step": xla_count["train_step"] / step_flops,
    },
  }


def compiled_memory(
  config: ml_collections.ConfigDict, run: Any, best_batch: int
) -> tuple[dict[str, Any], dict[str, Any]]:
  """(bytes accessed, memory) of the compiled train step and of the apply at the training batch,
  the best batch and batch 1, from XLA's cost and memory analyses."""
  batch, optimizer = config.batch_size, optimizer_from_config(config)
  state = create_train_state(
    run.model, optimizer, np.zeros((1, *run.input_shape), np.float32), jax.random.key(0)
  )
  x_b = np.zeros((batch, *run.input_shape), np.float32)
  train_compiled = xla.compiled_cost(
    make_train_step(run.model, optimizer), state, (x_b, np.zeros(batch, np.int32)), donate_argnums=0
  )
  apply_same = xla.compiled_cost(run.model.apply, run.params, x_b)
  apply_best = xla.compiled_cost(
    run.model.apply, run.params, np.zeros((best_batch, *run.input_shape), np.float32)
  )
  apply_one = xla.compiled_cost(
    run.model.apply, run.params, np.zeros((1, *run.input_shape), np.float32)
  )
  bytes_accessed = {
    "train_step": train_compiled.get("bytes_accessed"),
    "apply_same_batch": apply_same.get("bytes_accessed"),
    "apply_best_batch": apply_best.get("bytes_accessed"),
  }
  apply_keys = ("argument_bytes", "output_bytes", "temp_bytes", "peak_bytes")
  memory = {
    "params_bytes": tree_bytes(run.params),
    "optimizer_state_bytes": tree_bytes(state.opt_state),
    "train_step": {
      k: train_compiled.get(k)
      for k in ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "peak_bytes")
    },
    "apply_same_batch": {k: apply_same.get(k) for k in apply_keys},
    "apply_batch_1": {k: apply_one.get(k) for k in apply_keys},
  }
  return bytes_accessed, memory
