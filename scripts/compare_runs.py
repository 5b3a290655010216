"""A table of several runs, read from their workdirs' summary.json, for comparing by script.

  python scripts/compare_runs.py runs/*                       # markdown to stdout
  python scripts/compare_runs.py runs/* --format csv > runs.csv
  python scripts/compare_runs.py runs/a runs/b --out results/my_runs   # OUT.md (with provenance) + OUT.json
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

COLUMNS = [("run", None), ("experiment", None), ("model", None), ("params", "{:,}"),
           ("steps", None), ("final_test_accuracy", "{:.4f}"), ("best_test_accuracy", "{:.4f}"),
           ("best_step", None), ("final_test_loss", "{:.4f}"), ("train_seconds", "{:.2f}"),
           ("compile_seconds", "{:.2f}"), ("steps_per_second", "{:.0f}"), ("device", None)]


def read_run(workdir: str) -> dict:
  path = os.path.join(workdir, "summary.json")
  if not os.path.isfile(path):
    raise SystemExit(f"error: {workdir!r} has no summary.json; is it a finished training run?")
  with open(path) as f:
    return {"run": os.path.basename(os.path.normpath(workdir)), **json.load(f)}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("workdirs", nargs="+", help="run directories")
  p.add_argument("--format", choices=("md", "csv"), default="md")
  p.add_argument("--out", default="", help="write OUT.md (with provenance) and OUT.json")
  p.add_argument("--title", default="Runs")
  args = p.parse_args()
  runs = [read_run(w) for w in args.workdirs]
  header = [c for c, _ in COLUMNS]
  rows = [[(fmt.format(r[c]) if fmt and r.get(c) is not None else r.get(c, "")) for c, fmt in COLUMNS]
          for r in runs]
  if args.format == "csv":
    buf = io.StringIO()
    csv.writer(buf).writerows([header] + rows)
    text = buf.getvalue()
  else:
    from research.report import markdown_table
    text = markdown_table(header, rows) + "\n"
  sys.stdout.write(text)
  if args.out:
    from research.report import provenance, write_json
    meta = provenance(sys.argv)
    write_json(args.out + ".json", {"meta": meta, "runs": runs})
    with open(args.out + ".md", "w") as f:
      f.write(f"# {args.title}\n\n{meta['markdown']}\n\n{text}")


if __name__ == "__main__":
  main()
