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
import math
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
  overrides: tuple[str, ...] = ()  # on every run (a user's text file: data.name=text, data.path)


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
  labels = (
    f"study.size={size.name}",
    f"study.tokens={tokens}",
    f"study.non_embedding_params={size.params}",
  )
  overrides = (*preset.overrides, *size.overrides(), *schedule_overrides(steps), *labels, *extra)
  return SweepRun(run_name(size, steps), {"size": size.name, "steps": str(steps)}, overrides)


def size_named(name: str) -> Size:
  for s in SIZES:
    if s.name == name:
      return s
  raise ScalingError(f"unknown size {name!r}; choose one of: {', '.join(s.name for s in SIZES)}")


def parse_sizes(text: str) -> tuple[Size, ...]:
  """`s0,s3` (named sizes) or `2x48` (n_layer x d_model, a head per 16 widths) entries."""
  sizes = []
  for entry in (e.strip() for e in text.split(",")):
    if not entry:
      continue
    if "x" in entry:
      try:
        n_layer, d_model = (int(v) for v in entry.split("x"))
      except ValueError:
        raise ScalingError(f"--sizes entry {entry!r} is not LAYERSxWIDTH like 2x48") from None
      if n_layer < 1 or d_model < 2 or d_model % 2:
        raise ScalingError(f"--sizes entry {entry!r}: layers >= 1 and an even width >= 2")
      sizes.append(Size(entry, n_layer, d_model, max(1, d_model // 16) if d_model % 16 == 0 else 2))
    else:
      sizes.append(size_named(entry))
  if not sizes:
    raise ScalingError(
      "the grid is empty: --sizes names no size; give e.g. --sizes s0,s3,s6 (or leave it out)"
    )
  if len({s.params for s in sizes}) != len(sizes):
    raise ScalingError(f"--sizes {text!r} names the same size twice; name each once")
  return tuple(sizes)


def parse_budgets(text: str, tokens_per_step: int) -> tuple[int, ...]:
  """Token budgets (`262144,1e6`) as steps, each rounded up to a multiple of 16 steps."""
  steps = []
  for entry in (e.strip() for e in text.split(",")):
    if not entry:
      continue
    try:
      tokens = float(entry)
    except ValueError:
      raise ScalingError(f"--budgets entry {entry!r} is not a number of tokens") from None
    if not tokens >= tokens_per_step:
      raise ScalingError(
        f"--budgets entry {entry!r} is smaller than one batch ({tokens_per_step} tokens: batch "
        f"x n_ctx); give budgets of at least {tokens_per_step * 16} tokens"
      )
    steps.append(max(16, math.ceil(tokens / tokens_per_step / 16) * 16))
  if not steps:
    raise ScalingError("the grid is empty: --budgets names no budget; give e.g. 262144,1048576")
  if len(set(steps)) != len(steps):
    raise ScalingError(f"--budgets {text!r} gives the same budget twice after rounding to 16 steps")
  return tuple(sorted(steps))


def training_bytes(size: Size, vocab: int, batch: int, n_ctx: int) -> int:
  """A generous estimate of a run's memory: parameters, gradients and Adam's two moments in
  float32, and every layer's activations kept for the backward pass (attention scores too)."""
  params = size.params + vocab * size.d_model + n_ctx * size.d_model
  per_layer = batch * n_ctx * (16 * size.d_model + 2 * size.n_head * n_ctx)
  return 4 * (4 * params + size.n_layer * per_layer + 2 * batch * n_ctx * vocab)


def check_fits_memory(sizes: Sequence[Size], vocab: int, batch: int, n_ctx: int) -> None:
  import os

  total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  for size in sizes:
    need = training_bytes(size, vocab, batch, n_ctx)
    if need > 0.8 * total:
      raise ScalingError(
        f"size {size.name} ({size.params:,} non-embedding params) needs about "
        f"{need / 2**30:.1f} GiB to train, more than this machine's {total / 2**30:.1f} GiB "
        f"allows; choose a smaller size"
      )


def custom_preset(
  base: Preset,
  sizes: Sequence[Size] | None = None,
  steps: Sequence[int] | None = None,
  overrides: Sequence[str] = (),
) -> Preset:
  return dataclasses.replace(
    base,
    sizes=tuple(sizes) if sizes else base.sizes,
    budget_steps=tuple(steps) if steps else base.budget_steps,
    overrides=(*base.overrides, *overrides),
  )
