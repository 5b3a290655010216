"""Costs of a trained language model: training against real-time and batched generation.

  python scripts/train.py --config experiments/lm_markov_tiny.py --workdir runs/lm_markov_tiny
  python scripts/lm_costs.py --workdir runs/lm_markov_tiny     # -> runs/lm_markov_tiny/lm_costs/

Writes OUT/report.md and OUT/report.json: loss against the source's entropy rate, FLOPs per
token (Kaplan's formula, our exact count, XLA's), training tokens/s and MFU, time to first token
and time per output token at batch 1, batched generation tokens/s and MFU, and the break-even.
OUT defaults to WORKDIR/lm_costs; the committed results/lm/markov_tiny is re-made with
--out results/lm/markov_tiny.
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
  from research.cli import ArgumentParser, add_threads_flag, positive_int

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="a trained language-model run")
  p.add_argument("--out", default=None, help="report directory (default: WORKDIR/lm_costs)")
  p.add_argument("--prompt-tokens", type=positive_int, default=16)
  p.add_argument("--new-tokens", type=int, default=64)
  p.add_argument("--sequences", type=positive_int, default=20, help="batch-1 generations timed")
  p.add_argument("--batch-sizes", default="1,8,32,128")
  p.add_argument(
    "--decode",
    choices=("engine", "generator"),
    default="engine",
    help="time generation on the serving engine (default) or the lockstep Generator",
  )
  add_threads_flag(p)
  args = p.parse_args()
  try:
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
  except ValueError:
    p.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
  if min(batch_sizes) < 1 or args.prompt_tokens < 1 or args.new_tokens < 2 or args.sequences < 1:
    p.error("batch sizes, --prompt-tokens and --sequences must be >= 1, --new-tokens >= 2")
  from research.runtime import configure_threads

  configure_threads(args.threads)

  from research.studies.lm_costs import LMCostSettings, write_lm_costs

  out = args.out or os.path.join(args.workdir, "lm_costs")
  report = write_lm_costs(
    args.workdir,
    out,
    LMCostSettings(
      args.prompt_tokens, args.new_tokens, args.sequences, batch_sizes, decode=args.decode
    ),
    sys.argv,
  )
  rt, loss = report["generation"]["realtime"], report["loss"]
  print(
    f"loss {loss['test_nats_per_token']:.4f} nats/token"
    + (
      f" ({loss['gap_to_entropy_rate']:+.4f} from the entropy rate)"
      if loss["entropy_rate"] is not None
      else ""
    )
    + f"; train {report['training']['tokens_per_second']:,.0f} tokens/s "
    f"(MFU {100 * report['training']['mfu']:.1f} %); TTFT p50 {rt['ttft']['p50_ms']:.3f} ms, "
    f"TPOT p50 {rt['tpot']['p50_ms']:.3f} ms; best batched "
    f"{report['generation']['best_batched']['tokens_per_second']:,.0f} tokens/s -> {out}"
  )
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
