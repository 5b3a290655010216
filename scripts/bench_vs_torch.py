"""Training speed against the independent PyTorch reference, both pinned to the same CPU core.

For each repeat and model, runs `scripts/bench_torch_reference.py` and `scripts/train.py` (the
real training entry point, default config) one after the other under `taskset -c CORE`, one
thread each, alternating which goes first. Reports medians over repeats and the ratio. For the
JAX run it reports `train_seconds` from summary.json (compilation, evaluation and waiting for
checkpoint saves excluded) and the steady-state figure: the median per-chunk step time from the
run's TensorBoard events times the step count.

  python scripts/bench_vs_torch.py --models cnn --repeats 3   # -> runs/reports/speed_vs_torch.*
The committed results/speed_vs_torch.{md,json} are re-made with --out results/speed_vs_torch.
Needs torch (pip install -e '.[reference]').
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys


def main() -> int:
  from research.cli import ArgumentParser, non_negative_int, positive_int

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default="cnn", help="comma list of logistic, mlp, cnn, gru")
  p.add_argument("--repeats", type=positive_int, default=3)
  p.add_argument(
    "--core", type=non_negative_int, default=0, help="CPU core both sides are pinned to"
  )
  p.add_argument(
    "--out",
    default="runs/reports/speed_vs_torch",
    help="writes OUT.json and OUT.md (default runs/reports/speed_vs_torch; the committed ones are "
    "results/speed_vs_torch)",
  )
  args = p.parse_args()
  if importlib.util.find_spec("torch") is None:
    p.error("torch is not installed; pip install -e '.[reference]'")
  models = args.models.split(",")
  unknown = [m for m in models if m not in ("logistic", "mlp", "cnn", "gru")]
  if unknown:
    p.error(f"unknown model(s) {', '.join(unknown)}; choose from logistic, mlp, cnn, gru")
  from research.outputs import check_output_prefix

  check_output_prefix(args.out, "--out", (".json", ".md"))
  from research.studies.speed_vs_torch import time_against_torch, write_speed_report

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # scripts/ and experiments/
  rows = time_against_torch(models, args.repeats, args.core, root, lambda s: print(s, flush=True))
  write_speed_report(rows, args.out, args.core, args.repeats, sys.argv)
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
