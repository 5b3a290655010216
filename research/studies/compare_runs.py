"""A table of several runs, read from their workdirs: the hyperparameters that differ between them,
their summaries, TensorBoard step times and, where the main job has run, the cost report's headline
(FLOPs, time per example for training, real-time and batch inference, break-even counts).

Given a glob such as `runs/*`, entries that are not runs (a dataset file, a cache, a sweep's parent
directory, a run that never finished) are skipped and named, so that one stray entry does not stop
the table; only an empty selection is an error.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from typing import Any, Sequence

from research import config as config_lib
from research import workdir as workdir_lib
from research.outputs import markdown_table
from research.provenance import provenance
from research.studies.report_fields import comparison_fields

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


@dataclasses.dataclass
class RunsTable:
  """Everything a comparison shows, computed before anything is written."""

  runs: list[dict[str, Any]]  # one row per run; "config" holds its flattened config
  differ: list[str]  # flattened config fields whose values differ between runs, in config order
  same: dict[str, Any]  # fields equal in every run that has a config
  skipped: list[tuple[str, str]]  # (entry, why it is not a run)
  notes: list[str]  # runs read with something missing (an unreadable config or report)


def tensorboard_median_step_ms(workdir: str) -> float | None:
  import numpy as np
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  acc = EventAccumulator(workdir, size_guidance={"scalars": 0})
  acc.Reload()
  tags = acc.Tags().get("scalars", [])
  # perf/: the tag's name in runs written before it moved after train/ in Time Series.
  tag = next((t for t in ("train_speed/step_time_ms", "perf/step_time_ms") if t in tags), None)
  if tag is None:
    return None
  return float(np.median([e.value for e in acc.Scalars(tag)]))


def not_a_run(entry: str) -> str | None:
  """Why `entry` is not a finished run's directory, or None when it is one."""
  if not os.path.exists(entry):
    return "does not exist"
  if not os.path.isdir(entry):
    return "not a directory"
  if not os.path.isfile(workdir_lib.path(entry, workdir_lib.SUMMARY)):
    if os.path.isfile(workdir_lib.path(entry, workdir_lib.CONFIG)):
      return "unfinished: config.json but no summary.json"
    try:
      names = os.listdir(entry)
    except OSError:
      return "unreadable directory"
    inner = [n for n in names if os.path.isfile(os.path.join(entry, n, workdir_lib.SUMMARY))]
    if inner:
      return f"no summary.json; it holds {len(inner)} runs: pass {os.path.join(entry, '*')}"
    return "no summary.json"
  try:
    summary = workdir_lib.read_summary(entry)
  except workdir_lib.WorkdirError:
    return "corrupt summary.json"
  return None if isinstance(summary, dict) else "corrupt summary.json"


def read_run(workdir: str, notes: list[str] | None = None) -> dict[str, Any]:
  """One row: the run's summary, its median TensorBoard step time, its cost report's headline and
  its flattened config. What cannot be read beyond the summary is left out and noted."""
  notes = [] if notes is None else notes
  name = os.path.basename(os.path.normpath(workdir))
  summary = workdir_lib.read_summary(workdir)
  cost: dict[str, Any] = {}
  try:
    report = workdir_lib.read_report(workdir)
    if report and report.get("kind") == "language_model":  # per token, not per prediction
      notes.append(f"{workdir}: a language model's report (in tokens): cost columns left empty")
      report = None
    cost = comparison_fields(report) if report else {}
  except (workdir_lib.WorkdirError, KeyError, TypeError):
    notes.append(f"{workdir}: report.json is unreadable; its cost columns are left empty")
  config = None
  if os.path.isfile(workdir_lib.path(workdir, workdir_lib.CONFIG)):
    try:
      config = config_lib.flatten(workdir_lib.read_config(workdir))
    except (workdir_lib.WorkdirError, ValueError, TypeError):
      notes.append(f"{workdir}: config.json is unreadable; its hyperparameters are left empty")
  else:
    notes.append(f"{workdir}: no config.json; its hyperparameters are unknown")
  return {
    "run": name,
    **summary,
    "tb_median_step_ms": tensorboard_median_step_ms(workdir),
    **cost,
    "config": config,
  }


def compare(entries: Sequence[str]) -> RunsTable:
  """Reads every entry that is a run; raises WorkdirError (naming what was skipped) if none is."""
  skipped = [(e, why) for e in entries if (why := not_a_run(e))]
  not_runs = {e for e, _ in skipped}
  workdirs = [e for e in entries if e not in not_runs]
  if not workdirs:
    raise workdir_lib.WorkdirError(
      f"no runs among the {len(entries)} {'entry' if len(entries) == 1 else 'entries'} given "
      f"({describe_skipped(skipped)}); a run is a "
      "directory with summary.json: train one with python scripts/train.py --workdir DIR"
    )
  notes: list[str] = []
  runs = [read_run(w, notes) for w in workdirs]
  differ, same = _split_hyperparameters([r["config"] for r in runs if r["config"] is not None])
  taken = {c for c, _ in COLUMNS + COST_COLUMNS}
  differ = [k for k in differ if k not in taken]  # e.g. `experiment` is a column already
  differ = [k for k in differ if k not in config_lib.NOT_HYPERPARAMETERS]
  same = {k: v for k, v in same.items() if k not in config_lib.NOT_HYPERPARAMETERS}
  return RunsTable(runs, differ, same, skipped, notes)


def describe_skipped(skipped: Sequence[tuple[str, str]]) -> str:
  """'a, b (no summary.json); c (not a directory)': entries grouped by reason, in given order."""
  groups: dict[str, list[str]] = {}
  for entry, why in skipped:
    groups.setdefault(why, []).append(entry)
  return "; ".join(f"{', '.join(names)} ({why})" for why, names in groups.items())


def skipped_line(table: RunsTable) -> str:
  """The one stderr line naming the entries that were not runs ('' when none were)."""
  n = len(table.skipped)
  if not n:
    return ""
  noun = "entry that is not a run" if n == 1 else "entries that are not runs"
  return f"skipped {n} {noun}: {describe_skipped(table.skipped)}"


_MISSING = "<missing>"


def _key(value: Any) -> str:
  return json.dumps(value, sort_keys=True, default=str)


def _split_hyperparameters(configs: Sequence[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
  """Fields whose values differ between the configs (a field some lack counts as differing), and
  the fields every config holds with one value."""
  fields: dict[str, None] = {}
  for c in configs:
    fields.update(dict.fromkeys(c))
  differ, same = [], {}
  for f in fields:
    values = {_key(c.get(f, _MISSING)) for c in configs}
    if len(values) == 1 and all(f in c for c in configs):
      same[f] = configs[0][f]
    else:
      differ.append(f)
  return differ, same


def _hyperparameter_cell(config: dict[str, Any] | None, field: str) -> str:
  if config is None or field not in config:
    return ""
  value = config[field]
  return json.dumps(value) if isinstance(value, (list, tuple, dict)) or value == "" else str(value)


def _header_and_rows(table: RunsTable, formatted: bool) -> tuple[list[str], list[list[Any]]]:
  """`formatted`: numbers as people read them (5,210; 0.9300); else as stored, for a spreadsheet."""
  columns = COLUMNS + (COST_COLUMNS if any("break_even_flops" in r for r in table.runs) else [])
  header = ["run", *table.differ] + [c for c, _ in columns[1:]]
  rows = []
  for r in table.runs:
    hp = [_hyperparameter_cell(r["config"], f) for f in table.differ]
    cells = [
      "" if r.get(c) is None else (f.format(r[c]) if f and formatted else r[c])
      for c, f in columns[1:]
    ]
    rows.append([r["run"], *hp, *cells])
  return header, rows


def same_line(table: RunsTable) -> str:
  """'Same in all N runs: a=1, b=2' for markdown; '' when fewer than two runs have a config."""
  n = sum(r["config"] is not None for r in table.runs)
  if n < 2 or not table.same:
    return ""
  return f"Same in all {n} runs: " + ", ".join(
    f"`{k}`={_hyperparameter_cell(table.same, k)}" for k in table.same
  )


def render(table: RunsTable, fmt: str = "md") -> str:
  """The table as markdown (with the line of shared hyperparameters) or CSV text. CSV holds the
  numbers as stored (5210, not "5,210"), so a spreadsheet or csv reader parses them."""
  header, rows = _header_and_rows(table, formatted=fmt != "csv")
  if fmt == "csv":
    buf = io.StringIO()
    csv.writer(buf).writerows([header] + rows)
    return buf.getvalue()
  same = same_line(table)
  return markdown_table(header, rows) + "\n" + (f"\n{same}\n" if same else "")


def output_files(
  table: RunsTable, out: str, title: str, argv: Sequence[str], csv_too: bool = False
) -> dict[str, str]:
  """OUT.json (rows, hyperparameters, skipped entries, provenance), OUT.md (title, provenance,
  the table) and, with `csv_too`, OUT.csv: path -> text, nothing written yet."""
  meta = provenance(argv)
  record = {
    "meta": meta,
    "hyperparameters": {"differ": table.differ, "same": table.same},
    "skipped": [{"entry": e, "reason": why} for e, why in table.skipped],
    "runs": table.runs,
  }
  files = {
    out + ".json": json.dumps(record, indent=2, default=str) + "\n",
    out + ".md": f"# {title}\n\n{meta['markdown']}\n\n{render(table, 'md')}",
  }
  if csv_too:
    files[out + ".csv"] = render(table, "csv")
  return files
