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
import csv
import io
import os
import sys

COLUMNS = [
  ("run", None),
  ("experiment", None),
  ("model", None),
  ("params", "{:,}"),
  ("steps", None),
  ("final_test_accuracy", "{:.4f}"),
  ("best_test_accuracy", "{:.4f}"),
  ("best_step", None),
  ("final_test_loss", "{:.4f}"),
  ("train_seconds", "{:.2f}"),
  ("compile_seconds", "{:.2f}"),
  ("steps_per_second", "{:.0f}"),
  ("tb_median_step_ms", "{:.3f}"),
  ("device", None),
]
COST_COLUMNS = [
  ("forward_flops_per_example", "{:,.0f}"),
  ("train_to_forward_flops", "{:.2f}"),
  ("train_us_per_example", "{:.2f}"),
  ("realtime_us_per_prediction", "{:.2f}"),
  ("batch_us_per_prediction", "{:.2f}"),
  ("break_even_flops", "{:,.0f}"),
  ("break_even_realtime", "{:,.0f}"),
  ("break_even_batch", "{:,.0f}"),
  ("training_utilization", "{:.3f}"),
]


def tensorboard_median_step_ms(workdir: str) -> float | None:
  import numpy as np
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  acc = EventAccumulator(workdir, size_guidance={"scalars": 0})
  acc.Reload()
  if "perf/step_time_ms" not in acc.Tags().get("scalars", []):
    return None
  return float(np.median([e.value for e in acc.Scalars("perf/step_time_ms")]))


def read_run(workdir: str) -> dict:
  """One row: the run's summary, its median TensorBoard step time, its cost report's headline."""
  from research import workdir as workdir_lib
  from research.studies.cost_report import comparison_fields

  summary = workdir_lib.read_summary(workdir)
  report = workdir_lib.read_report(workdir)
  return {
    "run": os.path.basename(os.path.normpath(workdir)),
    **summary,
    "tb_median_step_ms": tensorboard_median_step_ms(workdir),
    **(comparison_fields(report) if report else {}),
  }


def main() -> int:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("workdirs", nargs="+", help="run directories")
  p.add_argument("--format", choices=("md", "csv"), default="md")
  p.add_argument("--out", default="", help="write OUT.md (with provenance) and OUT.json")
  p.add_argument("--title", default="Runs")
  args = p.parse_args()
  runs = [read_run(w) for w in args.workdirs]
  columns = COLUMNS + (COST_COLUMNS if any("break_even_flops" in r for r in runs) else [])
  header = [c for c, _ in columns]
  rows = [
    [(fmt.format(r[c]) if fmt and r.get(c) is not None else r.get(c, "")) for c, fmt in columns]
    for r in runs
  ]
  if args.format == "csv":
    buf = io.StringIO()
    csv.writer(buf).writerows([header] + rows)
    text = buf.getvalue()
  else:
    from research.provenance import markdown_table

    text = markdown_table(header, rows) + "\n"
  sys.stdout.write(text)
  if args.out:
    from research.provenance import provenance, write_json

    meta = provenance(sys.argv)
    write_json(args.out + ".json", {"meta": meta, "runs": runs})
    with open(args.out + ".md", "w") as f:
      f.write(f"# {args.title}\n\n{meta['markdown']}\n\n{text}")
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
