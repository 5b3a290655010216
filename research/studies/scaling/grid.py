"""The grid of runs: model sizes x token budgets, each an ordinary run directory of one sweep.

Sizes are byte-level Transformers of 1-3 layers (d_ff = 4 d_model), 2.0k to 147k non-embedding
parameters (74x); budgets are steps of 16 x 128 bytes, 0.26M to 8.4M tokens (32x), so the
smallest model sees 4,300 tokens per parameter at the largest. Every run has its own cosine
schedule to its own budget (shorter budgets are not cut from longer runs: a cosine run's loss
midway is above what a run planned for that budget reaches). Evaluated 8 times per run on the
same validation bytes, which gives approach 1 its learning curves.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from research.models.transformer_flops import exact_non_embedding_params
from research.studies.scaling import ScalingError
from research.training.sweep import SweepRun

CONFIG = "experiments/lm_code_scaling.py"


@dataclasses.dataclass(frozen=True)
class Size:
  name: str
  n_layer: int
  d_model: int
  n_head: int

  @property
  def d_ff(self) -> int:
    return 4 * self.d_model

  @property
  def params(self) -> int:
    """Non-embedding parameters (the N of the law)."""
    return exact_non_embedding_params(self.n_layer, self.d_model, self.d_ff)

  def overrides(self) -> tuple[str, ...]:
    m = {"n_layer": self.n_layer, "d_model": self.d_model, "n_head": self.n_head}
    return (*(f"model.{k}={v}" for k, v in m.items()), f"model.d_ff={self.d_ff}")


SIZES = (
  Size("s0", 1, 12, 2),
  Size("s1", 1, 16, 2),
  Size("s2", 1, 24, 2),
  Size("s3", 2, 24, 2),
  Size("s4", 2, 32, 2),
  Size("s5", 3, 48, 4),
  Size("s6", 3, 64, 4),
)
BUDGET_STEPS = (128, 256, 512, 1280, 4096)
EVALS_PER_RUN = 8


@dataclasses.dataclass(frozen=True)
class Preset:
  """A grid: which sizes, which budgets (in steps), on which base config variant."""

  sizes: tuple[Size, ...]
  budget_steps: tuple[int, ...]
  spec: str
  tokens_per_step: int  # batch x n_ctx of the spec
  measure: dict[str, Any]  # the serving measurement's settings


PRESETS = {
  "full": Preset(
    SIZES,
    BUDGET_STEPS,
    CONFIG,
    16 * 128,
    {"prompt_tokens": 16, "new_tokens": 64, "slots": (1, 8, 32, 64), "sequences": 20},
  ),
  # The toy grid CI runs end to end: two sizes, two budgets, 32-byte windows.
  "tiny": Preset(
    SIZES[:2],
    (32, 64),
    CONFIG + ":tiny",
    16 * 32,
    {"prompt_tokens": 8, "new_tokens": 16, "slots": (1, 8), "sequences": 5},
  ),
}


def run_name(size: Size, steps: int) -> str:
  return f"{size.name}_{steps}steps"


def schedule_overrides(steps: int) -> tuple[str, ...]:
  """The run's budget and its own cosine schedule: warmup 5 % of it, decay to its last step;
  8 evaluations, 2 checkpoints."""
  if steps < EVALS_PER_RUN * 2 or steps % (EVALS_PER_RUN * 2):
    raise ScalingError(
      f"a budget of {steps} steps does not split into {EVALS_PER_RUN} evaluations; use a "
      f"multiple of {EVALS_PER_RUN * 2} steps"
    )
  eval_every = steps // EVALS_PER_RUN
  return (
    f"num_steps={steps}",
    f"log_every={eval_every // 2}",
    f"eval_every={eval_every}",
    f"checkpoint_every={eval_every * EVALS_PER_RUN // 2}",
    f"optimizer.warmup_steps={max(1, steps // 20)}",
    "optimizer.decay_steps=0",
  )


def grid_runs(preset: Preset, extra: Sequence[str] = ()) -> list[SweepRun]:
  """One run per size and budget, largest first (the longest jobs start first on the workers)."""
  runs = []
  for size in sorted(preset.sizes, key=lambda s: -s.params):
    for steps in sorted(preset.budget_steps, reverse=True):
      runs.append(single_run(size, steps, preset, extra))
  return runs


def single_run(size: Size, steps: int, preset: Preset, extra: Sequence[str] = ()) -> SweepRun:
  tokens = steps * preset.tokens_per_step
  labels = (f"study.size={size.name}", f"study.tokens={tokens}", f"study.non_embedding_params={size.params}")
  overrides = (*size.overrides(), *schedule_overrides(steps), *labels, *extra)
  return SweepRun(run_name(size, steps), {"size": size.name, "steps": str(steps)}, overrides)


def size_named(name: str) -> Size:
  for s in SIZES:
    if s.name == name:
      return s
  raise ScalingError(f"unknown size {name!r}; choose one of: {', '.join(s.name for s in SIZES)}")
