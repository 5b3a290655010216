"""A table of several runs, read from their workdirs, for comparing by script.

Each run contributes the hyperparameters that differ between the runs compared (from its
config.json, one column each, right after the run's name; the ones they share are listed under
the markdown table), its summary.json, the median step time from its TensorBoard events, and,
when `scripts/train_vs_infer.py` has run there, its cost report (report.json): FLOPs, time per
example for training vs real-time vs batch inference, and the break-even prediction counts.

Entries that are not finished runs (files, caches, a sweep's parent directory, a run that
never finished, a corrupt summary.json) are skipped and named on one stderr line; only a
selection without any run is an error. Nothing is written until the whole table is made.

  python scripts/compare_runs.py runs/*                       # markdown to stdout
  python scripts/compare_runs.py runs/* --format csv --out runs/reports/runs   # .csv, .md, .json
  python scripts/compare_runs.py runs/sweep_cnn/*             # the runs of one sweep

The markdown shows numbers as people read them (5,210 parameters); CSV holds them as stored
(5210, and accuracies at full precision), so a spreadsheet or Python's csv module reads plain
numbers.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
  from research.cli import ArgumentParser

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("workdirs", nargs="+", help="run directories (other entries are skipped)")
  p.add_argument("--format", choices=("md", "csv"), default="md", help="of the table on stdout")
  p.add_argument(
    "--out",
    default="",
    help="also write OUT.md (with provenance) and OUT.json, and OUT.csv with --format csv",
  )
  p.add_argument("--title", default="Runs", help="heading of OUT.md")
  args = p.parse_args()
  from research.outputs import check_output_prefix, write_all
  from research.studies.compare_runs import compare, output_files, render, skipped_line

  if args.out:  # not a directory, nor a run's own file (--out RUN/config: RUN/config.json)
    inputs = [("run directory", w) for w in args.workdirs]
    check_output_prefix(args.out, "--out", (".md", ".json", ".csv"), inputs=inputs)

  table = compare(args.workdirs)
  text = render(table, args.format)
  if args.out:
    files = output_files(table, args.out, args.title, sys.argv, csv_too=args.format == "csv")
    write_all(files, flag="--out")
  for line in filter(None, [skipped_line(table), *table.notes]):
    print(line, file=sys.stderr)
  sys.stdout.write(text)
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
