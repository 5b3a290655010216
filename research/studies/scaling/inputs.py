"""What the scaling command is given, checked before anything trains: the grid (sizes, budgets,
memory), the corpus (the pinned source or the user's text file, with its sha256) and OUT."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from research.studies.scaling import ScalingError
from research.studies.scaling.grid import (
  PRESETS,
  Preset,
  check_fits_memory,
  custom_preset,
  parse_budgets,
  parse_sizes,
)


def prepare(
  preset_name: str, sizes: str, budgets: str, text: str, out: str, workdir: str
) -> tuple[Preset, dict[str, Any]]:
  """Every check the command can fail before it trains: the grid, memory, the corpus, OUT."""
  from research.outputs import check_output_dir

  base = PRESETS[preset_name]
  overrides: tuple[str, ...] = ()
  if text:
    corpus = _text_record(text)
    overrides = ("data.name=text", f"data.path={os.path.abspath(text)}")
  else:
    from research.data.source_code import load_source_code_corpus

    _, corpus = load_source_code_corpus()
  preset = custom_preset(
    base,
    parse_sizes(sizes) if sizes.strip() else None,
    parse_budgets(budgets, base.tokens_per_step) if budgets.strip() else None,
    overrides,
  )
  if len(preset.sizes) < 2 or len(preset.budget_steps) < 2:
    raise ScalingError(
      f"the grid has {len(preset.sizes)} size(s) x {len(preset.budget_steps)} budget(s); the law "
      f"needs at least 2 of each (and 4 runs): give more --sizes or --budgets"
    )
  from research.config import load_config

  config = load_config(preset.spec, preset.overrides)
  check_fits_memory(preset.sizes, corpus["vocab_size"], config.batch_size, config.model.n_ctx)
  check_output_dir(out, "--out", names=report_files(), runs=[workdir])
  return preset, corpus


def _text_record(path: str) -> dict[str, Any]:
  from research.data.text import load_text_corpus

  corpus = load_text_corpus(path)  # a DataError, one line, for a path that is not UTF-8 text
  with open(path, "rb") as f:
    raw = f.read()
  return {
    "path": os.path.abspath(path),
    "sha256": hashlib.sha256(raw).hexdigest(),
    "bytes": {"total": len(raw)},
    "vocab_size": corpus.vocab_size,
    "level": "character",
  }


def report_files() -> tuple[str, ...]:
  from research.studies.scaling.report import FILES

  return FILES
