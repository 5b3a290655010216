"""Reproduce Table 1 of the MNIST-1D paper: four models x {original, shuffled} x N seeds.

  python scripts/reproduce_mnist1d.py              # 24 runs -> runs/reports/mnist1d_table.{md,json}
  python scripts/reproduce_mnist1d.py --fresh --torch-reference   # retrain all, time PyTorch too
  python scripts/reproduce_mnist1d.py --config.seeds=5 --out runs/reports/table_5seeds
  python scripts/reproduce_mnist1d.py --fresh --torch-reference --out results/mnist1d_table
                                                   # re-makes the committed table in results/

A job trains some of one model's runs (both variants, several seeds) side by side in one vmapped
train chunk; one worker process per core, each pinned, takes the next job when free, longest
first, sharing a compilation cache. Finished jobs are cached under --workdir and reused when their
settings match; --fresh retrains and empties the compilation cache. --torch-reference then times
one run per model of the independent PyTorch implementation in the same invocation, for the speed
comparison. The table goes to --out (default runs/reports/mnist1d_table), apart from the cache,
so neither sits inside a run directory; it goes into results/ only when --out says so. The work is
done by research.studies.mnist1d_table1.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys


def main() -> int:
  # Imported here: the spawned workers re-import this file, and need none of it.
  from research.cli import ArgumentParser, parse_with_overrides, positive_int
  from research.config import load_config
  from research.outputs import check_output_dir, check_output_prefix
  from research.studies.mnist1d_table1 import format_summary, reproduce

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="experiments/mnist1d_table1.py")
  p.add_argument(
    "--workdir", default="runs/mnist1d_table1", help="cache of finished jobs (not a run directory)"
  )
  p.add_argument(
    "--out",
    default="runs/reports/mnist1d_table",
    help="writes OUT.md and OUT.json (default runs/reports/mnist1d_table; the committed table is "
    "results/mnist1d_table)",
  )
  p.add_argument(
    "--workers",
    type=positive_int,
    default=min(2, len(os.sched_getaffinity(0))),
    help="processes, one per core (default: up to 2)",
  )
  p.add_argument("--fresh", action="store_true", help="retrain even when a cached result matches")
  p.add_argument(
    "--torch-reference",
    action="store_true",
    help="also time one PyTorch run per model here (needs pip install -e '.[reference]')",
  )
  args, overrides = parse_with_overrides(p)
  config = load_config(args.config, overrides)
  if config.num_steps % config.eval_every:
    p.error("num_steps must be a multiple of eval_every")
  unknown = [m for m in config.models if m not in config.paper]
  if unknown or not config.models:
    p.error(f"--config.models: unknown model(s) {unknown}; choose from {', '.join(config.paper)}")
  if config.seeds < 1:
    p.error(f"--config.seeds must be at least 1, got {config.seeds}")
  check_output_prefix(args.out, "--out", (".md", ".json"))
  check_output_dir(args.workdir, "--workdir")
  cores = sorted(os.sched_getaffinity(0))
  if not 1 <= args.workers <= len(cores):
    p.error(f"--workers must be between 1 and the {len(cores)} core(s) this process may use")
  if args.torch_reference:
    if importlib.util.find_spec("torch") is None:
      p.error("--torch-reference needs PyTorch: pip install -e '.[reference]'")
    if shutil.which("taskset") is None:
      p.error("--torch-reference needs `taskset` (util-linux) to pin each PyTorch process")
  report = reproduce(
    config,
    args.workdir,
    args.out,
    args.workers,
    fresh=args.fresh,
    torch_reference=args.torch_reference,
    argv=sys.argv,
    root=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # experiments/, results/
  )
  print(format_summary(report, args.out))
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
