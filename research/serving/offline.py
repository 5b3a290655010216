"""Offline prediction from files: examples in (.npy, .npz, .csv), predictions out, params only."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from research.data.arrays import OUTPUT_SUFFIXES, read_inputs, write_predictions
from research.outputs import check_output_file
from research.serving import InferenceError
from research.serving.engine import check_batch_sizes
from research.serving.predictor import Predictor
from research.serving.quantize import PRECISIONS
from research.serving.restore import load_run
from research.serving.run_kind import require_classifier


def predict_file(
  workdir: str,
  input_path: str,
  output_path: str,
  key: str | None = None,
  checkpoint: str | int = "latest",
  probabilities: bool = False,
  precision: str = "float32",
  batch_size: int = 512,
) -> dict[str, Any]:
  """Predicts every example of `input_path` with a run's checkpoint and writes `output_path`.

  The output path, the run's kind and the labels stored beside the inputs (`x_test` -> `y_test`)
  are checked before anything is restored or written, and the accuracy on the labels returned.
  CSV rows holding flattened examples are reshaped.
  """
  inputs = [("--input", input_path), ("--workdir", workdir)]
  check_output_file(output_path, "--output", OUTPUT_SUFFIXES, parent_must_exist=True, inputs=inputs)
  if precision not in PRECISIONS:
    raise InferenceError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
  check_batch_sizes([batch_size])
  require_classifier(workdir, "scripts/infer.py")
  x, labels = read_inputs(input_path, key)
  run = load_run(workdir, checkpoint)
  if x.ndim == 2 and len(run.input_shape) > 1 and x.shape[1] == int(np.prod(run.input_shape)):
    x = x.reshape(len(x), *run.input_shape)  # CSV rows hold flattened examples
  sizes = sorted({1, min(8, batch_size), min(64, batch_size), batch_size})
  predictor = Predictor.from_run(run, batch_sizes=sizes, precision=precision)
  t = time.perf_counter()
  probs = predictor.probabilities(x)
  seconds = time.perf_counter() - t
  predictions = probs.argmax(-1).astype(np.int32)
  write_predictions(output_path, predictions, probs if probabilities else None)
  return {
    "count": len(x),
    "experiment": run.config.experiment,
    "step": run.step,
    "seconds": seconds,
    "accuracy": None if labels is None else float(np.mean(predictions == labels)),
  }
