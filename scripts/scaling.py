"""Inference-aware scaling: which model size to train, and for how long, given its demand.

  python scripts/scaling.py --preset tiny --out runs/scaling_tiny/report    # 2x2 toy, < 2 min
  python scripts/scaling.py --out results/scaling                           # the full grid

Trains a grid of byte-level Transformers (sizes x token budgets, each an ordinary run directory
under WORKDIR/grid, trained on the sweep workers with a cosine schedule to its own budget) on
the source of SymPy 1.14.0 (26.2 MB, sha256 recorded), or on --text FILE. Then it fits the loss
law L(N, D) = E + A/N^alpha + B/D^beta (Chinchilla approaches 1 and 3, bootstrap intervals),
measures each size's training and serving seconds per token on one core (the serving engine,
batch 1 and its best slot count), and finds the model that reaches a target loss at the least
training-plus-serving cost for each inference demand (Sardana et al. 2024): in FLOPs, measured
seconds and dollars. Finally it trains the model it recommends at a high demand and the
Chinchilla-optimal one for the same loss, and reports predicted against measured.

Writes OUT/scaling.md, OUT/scaling.json and OUT/*.png. Re-running the same command resumes:
finished runs are skipped, measured costs are reused. WORKDIR defaults to runs/scaling/PRESET.
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
  from research.cli import ArgumentParser

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default="full", help="full (7 sizes x 5 budgets) or tiny (2 x 2)")
  p.add_argument("--out", required=True, help="report directory (scaling.md, scaling.json, PNGs)")
  p.add_argument("--workdir", default="", help="where the runs go (default runs/scaling/PRESET)")
  p.add_argument("--sizes", default="", help="a subset of sizes: s0..s6, or LAYERSxWIDTH (2x48)")
  p.add_argument("--budgets", default="", help="token budgets instead of the preset's: 262144,1e6")
  p.add_argument("--text", default="", help="train on this UTF-8 text file instead (characters)")
  p.add_argument("--workers", type=int, default=0, help="sweep workers (default: one per core)")
  p.add_argument("--no-check", action="store_true", help="skip training the recommended model")
  p.add_argument(
    "--price-per-hour", type=float, default=0.05, help="this machine's $/hour (an assumption)"
  )
  args = p.parse_args()
  from research.studies.scaling.grid import PRESETS

  if args.preset not in PRESETS:
    p.error(f"unknown --preset {args.preset!r}; choose one of: {', '.join(PRESETS)}")
  if not (args.price_per_hour >= 0 and args.price_per_hour < float("inf")):
    p.error(f"--price-per-hour must be a finite number >= 0, got {args.price_per_hour}")
  workdir = args.workdir or os.path.join("runs", "scaling", args.preset)
  from research.studies.scaling.inputs import prepare
  from research.studies.scaling.report import write_report
  from research.studies.scaling.study import run_study

  preset, corpus = prepare(args.preset, args.sizes, args.budgets, args.text, args.out, workdir)
  result = run_study(
    preset,
    workdir,
    workers=args.workers,
    check=not args.no_check,
    price_per_hour=args.price_per_hour,
    argv=sys.argv,
  )
  result["corpus"] = corpus
  write_report(result, args.out, sys.argv)
  fit = result["fit"]["approach3"]
  line = (
    f"{len(result['grid'])} runs; alpha {fit['alpha']:.3f}, beta {fit['beta']:.3f}, "
    f"E {fit['E']:.3f}"
  )
  check = result.get("check")
  if check:
    line += (
      f"; check: {check['recommended']['size']} on {check['recommended']['trained_tokens']:,} "
      f"tokens reached {check['measured_loss']:.3f} (predicted {check['predicted_loss']:.3f}), "
      f"{check['recommended_cost_s'] / check['chinchilla_cost_s']:.2f}x the Chinchilla model's "
      f"cost at {check['demand_tokens']:.2g} tokens"
    )
  print(f"{line} -> {args.out}")
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
