"""Which training-loop structure is fastest for the MNIST-1D models on this CPU?

Compares, in one process on the same data and model: a Python loop over a jitted step fed host
batches; the same loop with the dataset on the device and indices fed; and `lax.scan` over chunks
of K steps gathering from the device-resident dataset. Each structure runs with the convolution as
XLA's conv and as im2col. Compilation is timed apart (ahead-of-time lower+compile); the timed part
runs all steps and blocks on the result; each is repeated and the median reported. Like every
script, it runs on one core with one XLA thread (--threads 1) unless given --threads 0.

  python scripts/bench_train_loop.py --repeats 3 --out results/train_loop_structure
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
  from research.cli import ArgumentParser, add_threads_flag, comma_list, positive_int

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="cnn1d", help="model registry name (default cnn1d)")
  p.add_argument("--steps", type=positive_int, default=6000, help="train steps per timed run")
  p.add_argument(
    "--repeats", type=positive_int, default=3, help="timed runs per structure (median kept)"
  )
  p.add_argument("--chunks", default="100,1000,6000", help="scan chunk lengths to try")
  p.add_argument(
    "--impls", default="im2col,xla", type=comma_list, help="conv1d implementations (cnn1d only)"
  )
  p.add_argument(
    "--structures",
    default="python_host,python_device,scan",
    type=comma_list,
    help="comma list of python_host, python_device, scan",
  )
  add_threads_flag(p)
  p.add_argument("--out", default="", help="write OUT.json and OUT.md")
  args = p.parse_args()
  try:
    chunks = [int(c) for c in args.chunks.split(",") if c]
  except ValueError:
    p.error(f"--chunks must be comma-separated integers, got {args.chunks!r}")
  unknown = sorted(set(args.structures) - {"python_host", "python_device", "scan"})
  if unknown:
    p.error(f"unknown structure(s) {', '.join(unknown)}; use python_host, python_device, scan")
  if not chunks or any(c < 1 or args.steps % c for c in chunks):
    p.error(f"every --chunks length must divide --steps ({args.steps}), got {chunks}")
  if args.out:
    from research.outputs import check_output_prefix

    check_output_prefix(args.out, "--out", (".json", ".md"))
  from research.runtime import configure_threads

  configure_threads(args.threads)  # before JAX starts
  from research.bench.train_loop import compare_loop_structures, write_loop_report

  records = compare_loop_structures(
    args.model,
    args.steps,
    args.repeats,
    chunks,
    args.impls,
    args.structures,
    log=lambda s: print(s, flush=True),
  )
  if args.out:
    write_loop_report(records, args.out, sys.argv, args.threads)
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
