"""What kind of run a workdir holds, read from its config.json alone (no JAX, no checkpoint): a
tool for classifiers refuses a language model, and the other way round, before any work."""

from __future__ import annotations

import ml_collections

from research import workdir as workdir_lib
from research.serving import InferenceError

LANGUAGE_MODEL_DATA = ("markov", "text")
LANGUAGE_MODELS = ("transformer",)


def run_kind(config: ml_collections.ConfigDict) -> str:
  """'language_model' (next-token prediction) or 'classification'."""
  data = config.get("data") or {}
  model = config.get("model") or {}
  if data.get("name") in LANGUAGE_MODEL_DATA or model.get("name") in LANGUAGE_MODELS:
    return "language_model"
  return "classification"


def require_classifier(workdir: str, tool: str) -> ml_collections.ConfigDict:
  """The run's config, or an InferenceError when it is a language model."""
  config = workdir_lib.read_config(workdir)
  if run_kind(config) == "language_model":
    raise InferenceError(
      f"{workdir} is a language-model run ({config.model.get('name')} on "
      f"{config.data.get('name')}); {tool} serves classifiers: use the LM tools "
      f"(scripts/lm_costs.py --workdir {workdir}, research.serving.generate)"
    )
  return config


def require_language_model(workdir: str, tool: str) -> ml_collections.ConfigDict:
  """The run's config, or an InferenceError when it is not a language model."""
  config = workdir_lib.read_config(workdir)
  if run_kind(config) != "language_model":
    raise InferenceError(
      f"{workdir} is a classifier run ({config.model.get('name')} on "
      f"{config.data.get('name')}); {tool} reports language models: for a classifier use "
      f"scripts/train_vs_infer.py or scripts/bench_inference.py --workdir {workdir}"
    )
  return config
