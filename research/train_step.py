"""The train step: one pure function `(state, batch) -> (state, metrics)`, and a scan over many.

Kept apart from the loop in `research/train.py` so benchmarks and tests can build exactly the step
that training runs.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

Batch = tuple[jax.Array, jax.Array]  # (inputs, integer labels)
Metrics = dict[str, jax.Array]


class TrainState(flax.struct.PyTreeNode):
  """Everything a step changes. The optimizer itself is static and lives outside."""
  step: jax.Array
  params: Any
  opt_state: Any


def make_optimizer(name: str, learning_rate: float, b1: float = 0.9, b2: float = 0.999,
                   weight_decay: float = 0.0, momentum: float = 0.9) -> optax.GradientTransformation:
  """The optimizers a config can name; PyTorch's Adam adds weight decay to the gradient (L2)."""
  if name == "adam":
    tx = optax.adam(learning_rate, b1=b1, b2=b2)
    return optax.chain(optax.add_decayed_weights(weight_decay), tx) if weight_decay else tx
  if name == "adamw":
    return optax.adamw(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay)
  if name == "sgd":
    return optax.sgd(learning_rate, momentum=momentum or None)
  raise ValueError(f"unknown optimizer {name!r}; choose one of: adam, adamw, sgd")


def create_train_state(model: nn.Module, optimizer: optax.GradientTransformation,
                       example_x: jax.Array, key: jax.Array) -> TrainState:
  """Initial parameters and optimizer state, built from the model alone."""
  params = model.init(key, example_x)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params))


def cross_entropy_sum(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Summed (not averaged) loss, in float32 whatever the compute dtype, so padded batches add up.

  Written with a one-hot mask rather than a gather: the gather's gradient is a scatter-add, which
  costs XLA:CPU more than the whole Adam update at these sizes.
  """
  logits = logits.astype(jnp.float32)
  label_logit = jnp.sum(jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool),
                                  logits, 0.0), axis=-1)
  return jnp.sum(jax.nn.logsumexp(logits, axis=-1) - label_logit)


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """The pure train step; callers jit it (with the state donated) or scan it."""

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    x, y = batch

    def loss_fn(params):
      logits = model.apply(params, x)
      return cross_entropy_sum(logits, y) / y.size, logits  # mean per target (token)

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == y),
        "grad_norm": optax.global_norm(grads),
    }
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def make_train_chunk(train_step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]]
                     ) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array],
                                   tuple[TrainState, Metrics]]:
  """Many steps in one call: scan the step over index rows into a device-resident dataset.

  `indices_KxB` holds the example indices of K consecutive batches; the gather happens on device,
  so a chunk moves K*B int32 to the device instead of K batches of inputs. Metrics come back
  per step (leading axis K).
  """

  def train_chunk(state, x_all, y_all, indices_KxB):
    def body(state, idx_B):
      # Indices come from BatchSchedule, always in range: skip the gather's bounds handling.
      batch = (x_all.at[idx_B].get(mode="promise_in_bounds"),
               y_all.at[idx_B].get(mode="promise_in_bounds"))
      return train_step(state, batch)
    return jax.lax.scan(body, state, indices_KxB)

  return train_chunk
