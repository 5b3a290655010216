"""Predictions for new data from a trained run: params only, through the jitted inference `apply`.

  python scripts/infer.py --workdir runs/cnn --input new.npy --output preds.npy
  python scripts/infer.py --workdir runs/cnn --input mnist1d.npz --key x_test --output preds.csv --probabilities

Input: `.npy`, `.npz` (array --key, default `x`) or CSV (one example per row, optional header).
Output: `.npy` (labels, or probabilities with --probabilities), `.npz` (`predictions`, and
`probabilities`), or CSV (prediction, p0, p1, ...). When an `.npz` also holds the matching labels
(`x` -> `y`, `x_test` -> `y_test`) the accuracy is printed. `scripts/export_dataset.py` writes a
config's dataset in that form.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
  from research.runtime import configure_threads
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a trained run's directory")
  parser.add_argument("--input", required=True, help=".npy, .npz or .csv")
  parser.add_argument("--output", required=True, help=".npy, .npz or .csv")
  parser.add_argument("--key", default=None, help="array to read from an .npz (default: x)")
  parser.add_argument("--checkpoint", default="latest", help="latest (default), best, or a step")
  parser.add_argument("--probabilities", action="store_true", help="also write class probabilities")
  parser.add_argument("--precision", default="float32", help="float32, bfloat16 or int8 (weights)")
  parser.add_argument("--batch-size", type=int, default=512, help="largest compiled batch")
  parser.add_argument("--threads", type=int, default=1, choices=(0, 1),
                      help="1 (default) pins XLA:CPU to one thread; 0 keeps XLA's pool")
  args = parser.parse_args()
  configure_threads(args.threads)

  import numpy as np
  from research.data.arrays import read_inputs, write_predictions
  from research.infer import InferenceError, Predictor, load_run

  x, labels = read_inputs(args.input, args.key)
  run = load_run(args.workdir, args.checkpoint)
  if x.ndim == 2 and len(run.input_shape) > 1 and x.shape[1] == int(np.prod(run.input_shape)):
    x = x.reshape(len(x), *run.input_shape)  # CSV rows hold flattened examples
  sizes = sorted({1, min(8, args.batch_size), min(64, args.batch_size), args.batch_size})
  predictor = Predictor.from_run(run, batch_sizes=sizes, precision=args.precision)
  t = time.perf_counter()
  probabilities = predictor.probabilities(x)
  seconds = time.perf_counter() - t
  predictions = probabilities.argmax(-1).astype(np.int32)
  write_predictions(args.output, predictions, probabilities if args.probabilities else None)

  print(f"{len(x)} predictions from {run.config.experiment} step {run.step} ({args.precision}) "
        f"in {seconds * 1e3:.1f} ms -> {args.output}")
  if labels is not None:
    if labels.shape != predictions.shape:
      raise InferenceError(f"labels in {args.input} have shape {list(labels.shape)}, "
                           f"predictions {list(predictions.shape)}; they must match")
    print(f"accuracy {float(np.mean(predictions == labels)):.4f} on {len(labels)} labelled examples")
  return 0


if __name__ == "__main__":
  from research.cli import run_main
  run_main(main)
