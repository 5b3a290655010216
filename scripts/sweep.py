"""Train a grid of runs, each in its own run directory, side by side where they can be.

  python scripts/sweep.py --config experiments/mnist1d_cnn.py \
      --sweep optimizer.learning_rate=3e-3,1e-2,3e-2 --sweep seed=0,1,2 \
      --config.data.validation_size=500 --workdir runs/sweep_cnn_lr
  tensorboard --logdir runs/sweep_cnn_lr        # HParams: one trial per run

Every combination of the --sweep values becomes <workdir>/<key>=<value>_..., with its own config,
checkpoints, TensorBoard events and summary.json. Runs that differ only in the seed and the
optimizer scalars Optax injects (learning rate, weight decay, clipping norm) train side by side
in one vmapped program; the groups are cut into one slice per worker process, each pinned to its
own core. --config.<field>=<value> applies to every run. Re-running the command skips finished
runs and resumes interrupted ones. SIGTERM, Ctrl-C or SIGHUP reaches every worker: each
checkpoints its runs, and the sweep exits 143, 130 or 129 with one line. The table of results
lands in <workdir>/sweep.{md,csv} (and OUT.md/.csv/.json with --out). --one-by-one also trains
the same runs one after another, each alone, on one core, and reports both wall times (it needs
a fresh --workdir).
The work is done by research.training.sweep.
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
  # Imported here: the spawned workers re-import this file, and need none of it.
  from research.cli import ArgumentParser, non_negative_int, parse_with_overrides
  from research.training.sweep import run_sweep

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="experiments/mnist1d_cnn.py", help="experiment file[:variant]")
  p.add_argument(
    "--sweep",
    action="append",
    default=[],
    metavar="KEY=V1,V2,...",
    help="a config field and its values; repeat for a grid (required)",
  )
  p.add_argument("--workdir", required=True, help="the sweep's directory: one run directory each")
  p.add_argument(
    "--workers",
    type=non_negative_int,
    default=0,
    help=f"processes, one pinned core each (default 0: all {len(os.sched_getaffinity(0))})",
  )
  p.add_argument(
    "--one-by-one",
    action="store_true",
    help="also train the runs one after another on one core, and compare the wall times",
  )
  p.add_argument("--out", default="", help="also write the table to OUT.md, OUT.csv, OUT.json")
  args, overrides = parse_with_overrides(p)
  report = run_sweep(
    args.config,
    overrides,
    args.sweep,
    args.workdir,
    workers=args.workers,
    one_by_one=args.one_by_one,
    out=args.out,
    argv=sys.argv,
  )
  timing = report["timing"]
  line = f"{len(report['runs'])} runs -> {os.path.join(args.workdir, 'sweep.md')}"
  if timing:
    line += f"; {timing['wall_seconds']:.1f} s on {timing['workers']} worker(s)"
    if "speedup" in timing:
      line += f", one by one {timing['one_by_one_wall_seconds']:.1f} s ({timing['speedup']:.2f}x)"
  print(line)
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main, preemptible=True)
