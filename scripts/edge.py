"""The edge figures of a trained classifier: IREE modules for a phone's and a RISC-V core's CPU,
proof under emulation that the phone module answers as the host does, and projected cost.

  python scripts/edge.py --workdir runs/cnn --out results/edge/mnist1d_cnn

Writes OUT/edge.json and OUT/edge.md (OUT is replaced whole). Measured on this host: the host
module's agreement with jax, its time per call (the Python binding, and IREE's own
iree-benchmark-module) and a minimal process's peak memory. Checked under QEMU's user-mode
emulation: the aarch64 module's test-set predictions, run by IREE's aarch64 runtime (never
timed). Projected: latency and energy per prediction on a phone's big and little cores and a
microcontroller, from vendor peaks (research/cost/edge_devices.py).

Emulation needs Debian's qemu-user, libc6-arm64-cross and libstdc++6-arm64-cross, and IREE's
aarch64 runtime wheel of the compiler's release, fetched once from the registry:

  pip download --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \\
    --python-version 3.11 iree-base-runtime==3.13.0 -d runs/edge-runtime

--runtime-wheel names that wheel or its folder (default runs/edge-runtime); --no-emulate skips
the emulated check. --dispatch-batch (default 256; 0: off) splits the host module's time at that
batch dispatch by dispatch, and for a CNN sets IREE's direct convolutions beside the exported
im2col ones (about 30 s).
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
  from research.cli import ArgumentParser, add_threads_flag, checkpoint_arg, positive_int
  from research.runtime import configure_threads

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="a trained classifier run's directory")
  p.add_argument("--out", required=True, help="the folder for edge.json and edge.md")
  p.add_argument(
    "--checkpoint", default="latest", type=checkpoint_arg, help="latest (default), best, or a step"
  )
  p.add_argument(
    "--runtime-wheel",
    default=None,
    help="IREE's aarch64 runtime wheel, or its folder (default: runs/edge-runtime)",
  )
  p.add_argument("--no-emulate", action="store_true", help="skip the emulated check")
  p.add_argument("--latency-calls", type=positive_int, default=2000)
  p.add_argument(
    "--dispatch-batch",
    type=int,
    default=256,
    help="split the host module's time by dispatch at this batch (0: do not; default 256)",
  )
  add_threads_flag(p)
  args = p.parse_args()
  if args.no_emulate and args.runtime_wheel:
    p.error("--no-emulate and --runtime-wheel contradict each other; give one")
  if args.dispatch_batch < 0:
    p.error(f"--dispatch-batch must be 0 (off) or a batch size, not {args.dispatch_batch}")
  configure_threads(args.threads)

  from research.studies.edge_report import DEFAULT_RUNTIME_DIR, write_edge

  wheel = None if args.no_emulate else (args.runtime_wheel or DEFAULT_RUNTIME_DIR)
  record = write_edge(
    args.workdir,
    args.out,
    args.checkpoint,
    wheel,
    sys.argv,
    args.latency_calls,
    log=lambda s: print(s, flush=True),
    dispatch_batch=args.dispatch_batch or None,
  )
  emulated = [
    f"{t} agreement {e['agreement']:.4f}" for t, e in record["emulated"].items() if e.get("run")
  ]
  print(
    f"{record['wall_seconds']:.0f} s; wrote {args.out}/edge.json and edge.md"
    + (f"; under emulation: {', '.join(emulated)}" if emulated else "")
  )
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
