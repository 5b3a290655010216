"""The optimizers a config can name, built with Optax: schedule, clipping and decay mask included.

Every optimizer is wrapped in `optax.inject_hyperparams`, so its learning rate, weight decay and
clipping norm live in the optimizer state as arrays:
- the rate a step actually used is read back from the state (`learning_rate_used`), never
  recomputed from the config, and that is what `train/learning_rate` logs;
- runs that differ only in these scalars share one compiled step and train side by side under
  `vmap`, each member carrying its own values (`config.SIDE_BY_SIDE`).

A schedule is a shape times the peak rate: `learning_rate * lr_factor(step)`, where `lr_factor`
rises linearly over `warmup_steps` from 0 to 1, then decays (cosine or linear) to `end_factor`
at `decay_steps` (0: the run's `num_steps`). With the defaults (constant rate, no clipping, decay
on every parameter) the update is the plain Optax optimizer's, bit for bit. Adam's betas and
SGD's momentum stay Python constants: injected as arrays they change how Adam's bias correction
rounds, and the MNIST-1D CNN's parameters moved by up to 1.26 after 1000 steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from research.config_checks import DECAY_MASKS, OPTIMIZERS, SCHEDULES


def lr_factor_schedule(
  schedule: str, warmup_steps: int, decay_steps: int, end_factor: float
) -> Callable[[jax.Array], jax.Array] | None:
  """The learning rate's shape over steps, in [0, 1] times the peak; None for a constant rate."""
  if schedule not in SCHEDULES:
    raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
  if schedule == "constant" and warmup_steps == 0:
    return None
  if warmup_steps < 0 or decay_steps < 0 or not 0.0 <= end_factor <= 1.0:
    raise ValueError(
      f"schedule needs warmup_steps >= 0, decay_steps >= 0 and end_factor in [0, 1], got "
      f"{warmup_steps}, {decay_steps}, {end_factor}"
    )
  if schedule != "constant" and decay_steps <= warmup_steps:
    raise ValueError(
      f"decay_steps ({decay_steps}) must exceed warmup_steps ({warmup_steps}): the {schedule} "
      f"decay runs from the end of warmup to decay_steps"
    )
  warmup = optax.linear_schedule(0.0, 1.0, warmup_steps) if warmup_steps else None
  if schedule == "constant":
    decay = optax.constant_schedule(1.0)
  elif schedule == "cosine":
    decay = optax.cosine_decay_schedule(1.0, decay_steps - warmup_steps, alpha=end_factor)
  else:
    decay = optax.linear_schedule(1.0, end_factor, decay_steps - warmup_steps)
  if warmup is None:
    return decay
  return optax.join_schedules([warmup, decay], [warmup_steps])


def decay_mask(kind: str) -> Callable[[Any], Any] | None:
  """Which parameters weight decay touches: all, or matrices and kernels only (ndim >= 2), which
  leaves biases, norm scales and other vectors undecayed, as transformer recipes do."""
  if kind not in DECAY_MASKS:
    raise ValueError(f"unknown weight_decay_mask {kind!r}; choose one of: {', '.join(DECAY_MASKS)}")
  if kind == "all":
    return None
  return lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
  """A config's `optimizer` group, plus the run's `num_steps` (what `decay_steps` 0 means).

  PyTorch's Adam adds weight decay to the gradient (L2, `adam` here); `adamw` decouples it.
  `clip_norm` > 0 clips the global gradient norm first.
  """

  name: str
  learning_rate: float
  b1: float = 0.9
  b2: float = 0.999
  weight_decay: float = 0.0
  momentum: float = 0.9
  schedule: str = "constant"
  warmup_steps: int = 0
  decay_steps: int = 0
  end_factor: float = 0.0
  clip_norm: float = 0.0
  weight_decay_mask: str = "all"
  num_steps: int = 0


def make_optimizer(
  name: str, learning_rate: float, **settings: Any
) -> optax.GradientTransformation:
  """The optimizer named, with any other `OptimizerSettings` field given by keyword."""
  return build_optimizer(OptimizerSettings(name, learning_rate, **settings))


def build_optimizer(s: OptimizerSettings) -> optax.GradientTransformation:
  """The optimizer `s` describes, its scalars injected into its state (see the module's doc)."""
  if s.name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {s.name!r}; choose one of: {', '.join(OPTIMIZERS)}")
  factor = lr_factor_schedule(
    s.schedule, s.warmup_steps, s.decay_steps or s.num_steps, s.end_factor
  )
  mask = decay_mask(s.weight_decay_mask)

  def factory(learning_rate, weight_decay, clip_norm, lr_factor=None):
    lr = learning_rate if lr_factor is None else learning_rate * lr_factor
    return _build(s, mask, lr, weight_decay, clip_norm)

  hyper = dict(learning_rate=s.learning_rate, weight_decay=s.weight_decay, clip_norm=s.clip_norm)
  if factor is not None:
    hyper["lr_factor"] = factor
  return optax.inject_hyperparams(factory)(**hyper)


def _build(s: OptimizerSettings, mask, lr, weight_decay, clip_norm) -> optax.GradientTransformation:
  """The plain Optax chain. Its structure (decay and clipping on or off) comes from the settings;
  `lr`, `weight_decay` and `clip_norm` are the values injected into the state."""
  decay, clip = s.weight_decay != 0.0, s.clip_norm != 0.0
  if s.name == "adam":
    tx = optax.adam(lr, b1=s.b1, b2=s.b2)
    if decay:
      tx = optax.chain(optax.add_decayed_weights(weight_decay, mask), tx)
  elif s.name == "adamw":
    tx = optax.adamw(lr, b1=s.b1, b2=s.b2, weight_decay=weight_decay, mask=mask)
  else:
    tx = optax.sgd(lr, momentum=s.momentum if s.momentum else None)
    if decay:
      tx = optax.chain(optax.add_decayed_weights(weight_decay, mask), tx)
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
  return tx


def optimizer_from_config(config: Any) -> optax.GradientTransformation:
  """The optimizer of a run config: its `optimizer` group and its `num_steps`."""
  return build_optimizer(OptimizerSettings(**config.optimizer, num_steps=config.num_steps))


def learning_rate_used(opt_state: Any) -> jax.Array:
  """The learning rate of the update that produced `opt_state` (after warmup and decay)."""
  hyper = opt_state.hyperparams
  lr = hyper["learning_rate"]
  return lr * hyper["lr_factor"] if "lr_factor" in hyper else jnp.asarray(lr)
