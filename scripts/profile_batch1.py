"""Where the jitted apply's batch-1 time goes, beside ONNX Runtime, in one process.

  python scripts/profile_batch1.py --workdir runs/cnn --out results/inference/cnn_batch1_path
  python scripts/profile_batch1.py --workdir runs/cnn --out OUT --peer-onnx runs/torch_onnx/cnn.onnx

Times, alternating, a trivial jitted op (the dispatch floor), every kernel implementation of the
model with params as arguments and as compiled-in constants, the ONNX Runtime engine and any peer
ONNX file; counts the XLA ops each jitted variant executes. Writes OUT.md and OUT.json. About a
minute on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
  from research.cli import ArgumentParser, add_threads_flag, positive_int
  from research.runtime import configure_threads

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="a trained run's directory")
  p.add_argument("--out", required=True, help="output path without extension (.md, .json)")
  p.add_argument("--peer-onnx", action="append", default=[], metavar="FILE")
  p.add_argument("--blocks", type=positive_int, default=20, help="alternating blocks of 200 calls")
  add_threads_flag(p)
  args = p.parse_args()
  configure_threads(args.threads)

  from research.bench.batch1_path import write_profile

  md, records = write_profile(args.workdir, args.out, sys.argv, args.peer_onnx, args.blocks)
  for r in records:
    print(f"{r['variant']:60s} p50 {r['p50_us']:7.1f} µs  p99 {r['p99_us']:7.1f} µs")
  print(f"wrote {md} and {args.out}.json")
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
