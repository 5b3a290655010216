"""A table of several runs, read from their workdirs: summaries, TensorBoard step times and, where
the main job has run, the cost report's headline (FLOPs, time per example for training, real-time
and batch inference, break-even counts)."""

from __future__ import annotations

import csv
import io
import os
from typing import Any, Sequence

from research import workdir as workdir_lib
from research.provenance import markdown_table, provenance, write_json, write_text
from research.studies.cost_report import comparison_fields

COLUMNS = [
  ("run", None),
  ("experiment", None),
  ("model", None),
  ("params", "{:,}"),
  ("steps", None),
  ("final_test_accuracy", "{:.4f}"),
  ("best_step", None),  # chosen on validation; empty without a validation split
  ("best_val_accuracy", "{:.4f}"),
  ("best_test_accuracy", "{:.4f}"),
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
  summary = workdir_lib.read_summary(workdir)
  report = workdir_lib.read_report(workdir)
  return {
    "run": os.path.basename(os.path.normpath(workdir)),
    **summary,
    "tb_median_step_ms": tensorboard_median_step_ms(workdir),
    **(comparison_fields(report) if report else {}),
  }


def runs_table(workdirs: Sequence[str], fmt: str = "md") -> tuple[list[dict[str, Any]], str]:
  """Every run's row, and the table as markdown or CSV text (cost columns when any run has them)."""
  runs = [read_run(w) for w in workdirs]
  columns = COLUMNS + (COST_COLUMNS if any("break_even_flops" in r for r in runs) else [])
  header = [c for c, _ in columns]
  rows = [
    ["" if r.get(c) is None else (f.format(r[c]) if f else r[c]) for c, f in columns] for r in runs
  ]
  if fmt == "csv":
    buf = io.StringIO()
    csv.writer(buf).writerows([header] + rows)
    return runs, buf.getvalue()
  return runs, markdown_table(header, rows) + "\n"


def write_runs_table(
  runs: list[dict[str, Any]], text: str, out: str, title: str, argv: Sequence[str]
) -> None:
  """OUT.json (rows and provenance) and OUT.md (title, provenance, the table)."""
  meta = provenance(argv)
  write_json(out + ".json", {"meta": meta, "runs": runs})
  write_text(out + ".md", f"# {title}\n\n{meta['markdown']}\n\n{text}")
