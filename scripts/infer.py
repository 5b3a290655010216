"""Predictions for new data from a trained run: params only, through the jitted inference `apply`.

  python scripts/infer.py --workdir runs/cnn --input new.npy --output preds.npy
  python scripts/infer.py --workdir runs/cnn --input mnist1d.npz --key x_test --output preds.csv \
      --probabilities

Input: `.npy`, `.npz` (array --key, default `x`) or CSV (one example per row, optional header).
A CSV is read as UTF-8, with or without a byte-order mark (as spreadsheets save it); its first
row is a header only when one of its fields is not a number, so a row of numbers is always an
example, never dropped (a header of numbers such as `0,1,2` is read as data: name the columns
with words or leave the header out).
Output: `.npy` (labels, or probabilities with --probabilities), `.npz` (`predictions`, and
`probabilities`), or CSV (prediction, p0, p1, ...). When an `.npz` also holds the matching labels
(`x` -> `y`, `x_test` -> `y_test`) the accuracy is printed. `scripts/export_dataset.py` writes a
config's dataset in that form.

Nothing is written when an answer would be wrong: inputs that overflow the model (finite values
such as 3e37 that make its logits NaN or inf) are refused in one line naming the rows. --output
may not be the --input file, nor one of a run's own files (config.json, summary.json, ...).
"""

from __future__ import annotations

import argparse


def main() -> int:
  from research.cli import ArgumentParser, add_threads_flag, checkpoint_arg, positive_int
  from research.runtime import configure_threads

  parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a trained run's directory")
  parser.add_argument("--input", required=True, help=".npy, .npz or .csv")
  parser.add_argument("--output", required=True, help=".npy, .npz or .csv")
  parser.add_argument("--key", default=None, help="array to read from an .npz (default: x)")
  parser.add_argument(
    "--checkpoint", default="latest", type=checkpoint_arg, help="latest (default), best, or a step"
  )
  parser.add_argument("--probabilities", action="store_true", help="also write class probabilities")
  parser.add_argument("--precision", default="float32", help="float32, bfloat16 or int8 (weights)")
  parser.add_argument("--batch-size", type=positive_int, default=512, help="largest compiled batch")
  add_threads_flag(parser)
  args = parser.parse_args()
  configure_threads(args.threads)

  from research.serving.offline import predict_file

  r = predict_file(
    args.workdir,
    args.input,
    args.output,
    key=args.key,
    checkpoint=args.checkpoint,
    probabilities=args.probabilities,
    precision=args.precision,
    batch_size=args.batch_size,
  )
  print(
    f"{r['count']} predictions from {r['experiment']} step {r['step']} ({args.precision}) "
    f"in {r['seconds'] * 1e3:.1f} ms -> {args.output}"
  )
  if r["accuracy"] is not None:
    print(f"accuracy {r['accuracy']:.4f} on {r['count']} labelled examples")
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
