"""A table of several runs, read from their workdirs, for comparing by script.

Each run contributes its summary.json, the median step time from its TensorBoard events, and,
when `scripts/train_vs_infer.py` has run there, its cost report (report.json): FLOPs, time per
example for training vs real-time vs batch inference, and the break-even prediction counts.

  python scripts/compare_runs.py runs/*                       # markdown to stdout
  python scripts/compare_runs.py runs/* --format csv > runs.csv
  python scripts/compare_runs.py runs/a runs/b --out results/my_runs   # OUT.md, OUT.json
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("workdirs", nargs="+", help="run directories")
  p.add_argument("--format", choices=("md", "csv"), default="md")
  p.add_argument("--out", default="", help="write OUT.md (with provenance) and OUT.json")
  p.add_argument("--title", default="Runs")
  args = p.parse_args()
  from research.studies.compare_runs import runs_table, write_runs_table

  runs, text = runs_table(args.workdirs, args.format)
  sys.stdout.write(text)
  if args.out:
    write_runs_table(runs, text, args.out, args.title, sys.argv)
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
