"""Value checks `config.validate` runs on every config: sizes and seeds, the optimizer recipe,
and the profile window. Each takes `need(condition, message)`, which raises the config's one-line
error; `parse_window` raises ValueError, and the training loop's profiler parses with it too.

Nothing here imports JAX or the rest of `research.config`.
"""

from __future__ import annotations

from typing import Callable

import ml_collections

OPTIMIZERS = ("adam", "adamw", "sgd")
MAX_STEPS = 2**31  # steps count in int32 on device: a schedule at 3e9 steps overflowed
SCHEDULES = ("constant", "cosine", "linear")
DECAY_MASKS = ("all", "matrices")

Need = Callable[[bool, str], None]


def validate_sizes(config: ml_collections.ConfigDict, need: Need) -> None:
  """Seeds in numpy's range; every model and data size (channels, layers, heads, tokens, ...)
  positive: a zero or negative size otherwise fails deep inside JAX or numpy, or trains nothing."""
  for key, value in [("seed", config.get("seed", 0))] + [
    (f"data.{k}", v) for k, v in config.data.items() if k.endswith("seed")
  ]:
    ok = isinstance(value, int) and 0 <= value < 2**32
    need(ok, f"{key} must be an integer in [0, 2**32), got {value!r}")
  for group in ("model", "data"):
    for key, value in config[group].items():
      values = value if isinstance(value, (tuple, list)) else [value]
      sizes = values and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
      if sizes and not key.endswith("seed") and key != "validation_size":
        need(min(values) > 0, f"{group}.{key} is a size and must be positive, got {value!r}")
  d_model, n_head = config.model.get("d_model"), config.model.get("n_head")
  if isinstance(d_model, int) and isinstance(n_head, int):
    need(
      d_model % n_head == 0, f"model.d_model ({d_model}) must be a multiple of n_head ({n_head})"
    )
  fraction = config.data.get("val_fraction", 0.5)
  need(
    isinstance(fraction, (int, float)) and 0 < fraction < 1,
    f"data.val_fraction must lie strictly between 0 and 1, got {fraction!r}",
  )


def validate_optimizer(opt: ml_collections.ConfigDict, num_steps: int, need: Need) -> None:
  def choice(key, allowed, default):
    value = opt.get(key, default)
    need(
      value in allowed,
      f"optimizer.{key} {value!r} is unknown; choose one of: {', '.join(allowed)}",
    )

  choice("name", OPTIMIZERS, "adam")
  choice("schedule", SCHEDULES, "constant")
  choice("weight_decay_mask", DECAY_MASKS, "all")
  # Decay rates outside [0, 1) (or NaN) turn the loss into NaN steps later, which then blamed
  # the learning rate; checked here they name the field.
  for key, default in (("b1", 0.9), ("b2", 0.999), ("momentum", 0.9)):
    value = opt.get(key, default)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    need(
      number and 0.0 <= value < 1.0,
      f"optimizer.{key} is a decay rate and must be a finite number in [0, 1), got {value!r}; "
      f"set --config.optimizer.{key} (default {default})",
    )
  for key in ("weight_decay", "clip_norm"):
    need(opt.get(key, 0.0) >= 0, f"optimizer.{key} must be >= 0, got {opt.get(key)}")
  need(
    0.0 <= opt.get("end_factor", 0.0) <= 1.0,
    f"optimizer.end_factor is a fraction of the peak rate in [0, 1], got {opt.get('end_factor')}",
  )
  warmup, decay = opt.get("warmup_steps", 0), opt.get("decay_steps", 0)
  need(
    isinstance(warmup, int) and isinstance(decay, int) and warmup >= 0 and decay >= 0,
    f"optimizer.warmup_steps and decay_steps must be integers >= 0, got {warmup}, {decay}",
  )
  steps = {"num_steps": num_steps, "optimizer.warmup_steps": warmup, "optimizer.decay_steps": decay}
  for key, value in steps.items():
    need(
      value < MAX_STEPS,
      f"{key} must be below 2**31 ({MAX_STEPS}), got {value}; train for fewer steps",
    )
  if opt.get("schedule", "constant") != "constant":
    need(
      (decay or num_steps) > warmup,
      f"optimizer.decay_steps ({decay or num_steps}{' = num_steps' if not decay else ''}) must "
      f"exceed warmup_steps ({warmup}); shorten the warmup or lengthen the decay",
    )


def parse_window(spec: str, num_steps: int) -> tuple[int, int] | None:
  """(START, END) from "START:END", or None for ""; ValueError says what is wrong."""
  if not spec:
    return None
  start, sep, end = spec.partition(":")
  try:
    window = int(start), int(end)
  except ValueError:
    window = None
  if not sep or window is None:
    raise ValueError(f"profile_steps={spec!r}: expected START:END (e.g. 100:110) or empty")
  if not 0 <= window[0] < window[1] <= num_steps:
    raise ValueError(
      f"profile_steps={spec!r}: need 0 <= START < END <= num_steps ({num_steps}), e.g. 100:110"
    )
  return window
