"""A table of several runs, read from their workdirs, for comparing by script.

Each run contributes its summary.json, the median step time from its TensorBoard events, and,
when `scripts/train_vs_infer.py` has run there, its cost report (report.json): FLOPs, time per
example for training vs real-time vs batch inference, and the break-even prediction counts.

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
           ("compile_seconds", "{:.2f}"), ("steps_per_second", "{:.0f}"),
           ("tb_median_step_ms", "{:.3f}"), ("device", None)]
COST_COLUMNS = [("forward_flops_per_example", "{:,.0f}"), ("train_to_forward_flops", "{:.2f}"),
                ("train_us_per_example", "{:.2f}"), ("realtime_us_per_prediction", "{:.2f}"),
                ("batch_us_per_prediction", "{:.2f}"), ("break_even_flops", "{:,.0f}"),
                ("break_even_realtime", "{:,.0f}"), ("break_even_batch", "{:,.0f}"),
                ("training_utilization", "{:.3f}")]


def tensorboard_median_step_ms(workdir: str) -> float | None:
  import numpy as np
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  acc = EventAccumulator(workdir, size_guidance={"scalars": 0})
  acc.Reload()
  if "perf/step_time_ms" not in acc.Tags().get("scalars", []):
    return None
  return float(np.median([e.value for e in acc.Scalars("perf/step_time_ms")]))


def read_costs(workdir: str) -> dict:
  path = os.path.join(workdir, "report.json")
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    r = json.load(f)
  inf = r["time"]["inference"]
  return {"forward_flops_per_example": r["flops"]["forward_per_example"],
          "train_to_forward_flops": r["flops"]["train_to_forward_ratio"],
          "train_us_per_example": 1e6 * r["time"]["train_seconds_per_example"],
          "realtime_us_per_prediction": 1e6 * inf["realtime"]["seconds_per_prediction"],
          "batch_us_per_prediction": 1e6 * inf["batch"]["seconds_per_prediction"],
          "break_even_flops": r["break_even_predictions"]["flops"],
          "break_even_realtime": r["break_even_predictions"]["seconds_realtime"],
          "break_even_batch": r["break_even_predictions"]["seconds_batch"],
          "training_utilization": r["utilization"]["training"]}


def read_run(workdir: str) -> dict:
  path = os.path.join(workdir, "summary.json")
  if not os.path.isfile(path):
    raise SystemExit(f"error: {workdir!r} has no summary.json; is it a finished training run?")
  with open(path) as f:
    summary = json.load(f)
  return {"run": os.path.basename(os.path.normpath(workdir)), **summary,
          "tb_median_step_ms": tensorboard_median_step_ms(workdir), **read_costs(workdir)}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("workdirs", nargs="+", help="run directories")
  p.add_argument("--format", choices=("md", "csv"), default="md")
  p.add_argument("--out", default="", help="write OUT.md (with provenance) and OUT.json")
  p.add_argument("--title", default="Runs")
  args = p.parse_args()
  runs = [read_run(w) for w in args.workdirs]
  columns = COLUMNS + (COST_COLUMNS if any("break_even_flops" in r for r in runs) else [])
  header = [c for c, _ in columns]
  rows = [[(fmt.format(r[c]) if fmt and r.get(c) is not None else r.get(c, "")) for c, fmt in columns]
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
