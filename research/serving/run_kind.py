"""What kind of run a workdir holds, read from its config.json alone (no JAX, no checkpoint): a
tool for classifiers refuses a language model, and the other way round, before any work."""

from __future__ import annotations

import ml_collections

from research import workdir as workdir_lib
from research.data.dataset import LANGUAGE_MODEL, task_of
from research.serving import InferenceError


def run_kind(config: ml_collections.ConfigDict) -> str:
  """'language_model' (next-token prediction) or 'classification': the task of the config's data
  source (`research.data.dataset.task_of`)."""
  return task_of(config.get("data") or {})


def require_classifier(workdir: str, tool: str) -> ml_collections.ConfigDict:
  """The run's config, or an InferenceError when it is a language model."""
  config = workdir_lib.read_config(workdir)
  if run_kind(config) == LANGUAGE_MODEL:
    raise InferenceError(
      f"{workdir} is a language-model run ({config.model.get('name')} on "
      f"{config.data.get('name')}); {tool} serves classifiers: use the LM tools "
      f"(scripts/lm_costs.py --workdir {workdir}, research.serving.generate)"
    )
  return config


def require_language_model(workdir: str, tool: str) -> ml_collections.ConfigDict:
  """The run's config, or an InferenceError when it is not a language model."""
  config = workdir_lib.read_config(workdir)
  if run_kind(config) != LANGUAGE_MODEL:
    raise InferenceError(
      f"{workdir} is a classifier run ({config.model.get('name')} on "
      f"{config.data.get('name')}); {tool} reports language models: for a classifier use "
      f"scripts/train_vs_infer.py or scripts/bench_inference.py --workdir {workdir}"
    )
  return config
