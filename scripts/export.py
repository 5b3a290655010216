"""Export a trained run as a file another process or runtime serves without this repo's code.

  python scripts/export.py --workdir runs/cnn --format onnx --out runs/cnn/model.onnx
  python scripts/export.py --workdir runs/cnn --format stablehlo --out runs/cnn/model.stablehlo

onnx: through jax2onnx, for ONNX Runtime (batch dimension "B"). stablehlo: `jax.export`
serialized, lowered for CPU and CUDA; load it with `jax.export.deserialize(open(f, "rb").read())`
and `.call(x)`. Both carry the weights, leave the batch size free, and use XLA's own conv and dot
(the form that exports to native ops), not the CPU training kernels. Before anything is written
the export is run on the test set and must give the jitted apply's predictions; the check (max
logit difference) lands beside the file in OUT.json. Neither OUT nor OUT.json may be one of a
run's own files (`--out RUN/config` would replace RUN/config.json): that is refused before any
work, in one line.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
  from research.cli import ArgumentParser, add_threads_flag, checkpoint_arg
  from research.runtime import configure_threads

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="a trained run's directory")
  p.add_argument("--format", required=True, choices=("onnx", "stablehlo"))
  p.add_argument("--out", required=True, help="the file to write (OUT.json beside it)")
  p.add_argument(
    "--checkpoint", default="latest", type=checkpoint_arg, help="latest (default), best, or a step"
  )
  add_threads_flag(p)
  args = p.parse_args()
  configure_threads(args.threads)

  from research.serving.export import export_run

  record = export_run(args.workdir, args.format, args.out, args.checkpoint, sys.argv)
  check = record["check_against_jitted_apply"]
  print(
    f"wrote {args.out} ({record['bytes'] / 1024:.1f} KiB, {args.format}) and {args.out}.json; "
    f"on {check['examples']} test examples: predictions identical to the jitted apply, "
    f"max logit difference {check['max_abs_logit_difference']:.2e}"
  )
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
