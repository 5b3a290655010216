"""Experiment variants: `experiments/x.py:shuffled,tiny` names several, comma-separated.

Each experiment's `get_config(variant)` reads the names with `variant_names`, which refuses one
the file does not offer, then applies them; the order they are written in does not matter.

`tiny` is the same experiment cut to a few dozen steps with short log, eval and checkpoint
intervals (and, for the language models, a small model on a short sequence): what tests and
smoke runs train. It changes nothing else, so `:shuffled,tiny` is the shuffled run, short.
"""

from typing import Sequence

import ml_collections

# 40 steps, two evaluations, two checkpoints: enough for a resume to have a step to resume from.
TINY_STEPS = {"num_steps": 40, "log_every": 10, "eval_every": 20, "checkpoint_every": 20}


def variant_names(variant: str, known: Sequence[str]) -> set[str]:
  """The names in `variant` ("" or "a,b"); ValueError naming `known` for any other name."""
  names = [name.strip() for name in variant.split(",")] if variant else []
  for name in names:
    if name not in known:
      offered = ", ".join(known) if known else "none"
      raise ValueError(f"unknown variant {name!r}; this config has: {offered}")
  return set(names)


def make_tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Cuts `config` to TINY_STEPS in place; returns it."""
  for key, value in TINY_STEPS.items():
    config[key] = value
  return config
