"""Export a trained run as a file another process or runtime serves without this repo's code.

  python scripts/export.py --workdir runs/cnn --format onnx --out runs/cnn/model.onnx
  python scripts/export.py --workdir runs/cnn --format stablehlo --out runs/cnn/model.stablehlo
  python scripts/export.py --workdir runs/cnn --format iree --target aarch64 --out cnn-a76.vmfb

onnx: through jax2onnx, for ONNX Runtime (batch dimension "B"). stablehlo: `jax.export`
serialized, lowered for CPU and CUDA; load it with `jax.export.deserialize(open(f, "rb").read())`
and `.call(x)`. Both carry the weights, leave the batch size free, and use XLA's own conv and dot
(the form that exports to native ops), not the CPU training kernels. Before anything is written
the export is run on the test set and must give the jitted apply's predictions; the check (max
logit difference) lands beside the file in OUT.json. Neither OUT nor OUT.json may be one of a
run's own files (`--out RUN/config` would replace RUN/config.json): that is refused before any
work, in one line.

iree: the model compiled ahead of time by IREE for one CPU (`--target host`, `aarch64`: a phone's
Cortex-A76, `riscv64`: RV64GC with vectors) at a fixed `--batch` (default 1), fp32 or int8
weights; OUT.json is its manifest (target, compiler, input and output signature, bytes). A host
module is checked on the test set as above; another target's runs under emulation in
scripts/edge.py. A device runs it with IREE's runtime of the same release (3.13.0).
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
  from research.cli import ArgumentParser, add_threads_flag, checkpoint_arg, positive_int
  from research.runtime import configure_threads

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="a trained run's directory")
  p.add_argument("--format", required=True, choices=("onnx", "stablehlo", "iree"))
  p.add_argument("--target", default="host", help="iree: host (default), aarch64 or riscv64")
  p.add_argument("--batch", default=1, type=positive_int, help="iree: the module's batch size")
  p.add_argument("--precision", default="float32", help="iree: float32 (default) or int8")
  p.add_argument("--out", required=True, help="the file to write (OUT.json beside it)")
  p.add_argument(
    "--checkpoint", default="latest", type=checkpoint_arg, help="latest (default), best, or a step"
  )
  add_threads_flag(p)
  args = p.parse_args()
  configure_threads(args.threads)

  from research.serving.export import export_run

  if args.format != "iree" and (args.target, args.batch, args.precision) != ("host", 1, "float32"):
    p.error("--target, --batch and --precision are the iree format's; add --format iree")
  record = export_run(
    args.workdir, args.format, args.out, args.checkpoint, sys.argv,
    args.target, args.batch, args.precision,
  )  # fmt: skip
  check = record["check_against_jitted_apply"]
  if args.format == "iree":
    m = record["manifest"]
    checked = (
      f"on {check['examples']} test examples: {check['examples'] - check['predictions_differing']} "
      f"predictions equal to the jitted apply's, max logit difference "
      f"{check['max_abs_logit_difference']:.2e}"
      if check.get("run_here", True)
      else check["why"]
    )
    print(
      f"wrote {args.out} ({m['bytes'] / 1024:.1f} KiB, IREE module for {m['target']}: "
      f"{m['cpu']}, batch {args.batch}, {args.precision}) and {args.out}.json; {checked}"
    )
    return 0
  print(
    f"wrote {args.out} ({record['bytes'] / 1024:.1f} KiB, {args.format}) and {args.out}.json; "
    f"on {check['examples']} test examples: predictions identical to the jitted apply, "
    f"max logit difference {check['max_abs_logit_difference']:.2e}"
  )
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
