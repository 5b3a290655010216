"""A sweep's results as one table (markdown and CSV): the swept values, then each run's figures.

The best run is named by its best validation score when the runs have a validation split; the
test figures are reported beside it, never used to choose.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Sequence

from research.outputs import markdown_table

COLUMNS = (  # (summary field, header, format)
  ("status", "status", "{}"),
  ("final_test_accuracy", "final test acc", "{:.4f}"),
  ("final_test_loss", "final test loss", "{:.4f}"),
  ("best_step", "best step (val)", "{}"),
  ("best_val_accuracy", "best val acc", "{:.4f}"),
  ("best_test_accuracy", "test acc at best", "{:.4f}"),
  ("trained_side_by_side", "side by side", "{}"),
  ("train_seconds", "train s (group)", "{:.1f}"),
)


def _cell(value: Any, fmt: str) -> str:
  return "–" if value is None else fmt.format(value)


def rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
  """Header and one row per run: its name, its swept values, its figures."""
  header = ["run", *report["swept"], *(h for _, h, _ in COLUMNS)]
  body = []
  for run in report["runs"]:
    s = run["summary"]
    body.append(
      [
        run["name"],
        *(run["values"][k] for k in report["swept"]),
        *(_cell(s.get(k), fmt) for k, _, fmt in COLUMNS),
      ]
    )
  return header, body


def agreement(side_by_side: Sequence[dict], alone: Sequence[dict]) -> dict[str, float]:
  """How far the runs trained side by side ended from the same runs trained alone."""

  def gap(key):
    pairs = [(a.get(key), b.get(key)) for a, b in zip(side_by_side, alone)]
    return max((abs(a - b) for a, b in pairs if a is not None and b is not None), default=None)

  return {
    "max_abs_final_test_accuracy": gap("final_test_accuracy"),
    "max_abs_final_test_loss": gap("final_test_loss"),
    "bitwise_equal_final_test_loss": sum(
      a.get("final_test_loss") == b.get("final_test_loss") for a, b in zip(side_by_side, alone)
    ),
    "runs": len(alone),
  }


def best_run(report: dict[str, Any]) -> dict[str, Any] | None:
  """The run with the highest best-on-validation score, if the runs had a validation split."""
  scored = [r for r in report["runs"] if r["summary"].get("best_val_accuracy") is not None]
  return max(scored, key=lambda r: r["summary"]["best_val_accuracy"]) if scored else None


def markdown(report: dict[str, Any]) -> str:
  header, body = rows(report)
  lines = [
    f"# Sweep: {report['config']}, {len(body)} runs over {', '.join(report['swept'])}",
    "",
    report["provenance"]["markdown"],
    "",
    markdown_table(header, body),
    "",
  ]
  best = best_run(report)
  if best:
    s = best["summary"]
    lines.append(
      f"Best on validation: **{best['name']}** (val accuracy {s['best_val_accuracy']:.4f} at "
      f"step {s['best_step']}; its test accuracy {s['best_test_accuracy']:.4f})."
    )
  else:
    lines.append(
      "No validation split (`data.validation_size` 0), so no run is named best: choosing on "
      "the test figures above would leak the test set into the choice."
    )
  timing = report.get("timing")
  if timing:
    lines += [
      "",
      f"Trained in {timing['wall_seconds']:.1f} s wall on {timing['workers']} worker(s), one "
      f"pinned core each, jobs of {', '.join(map(str, timing['jobs']))} runs side by side "
      "(process start, compilation and evaluation included). `train s (group)` is the time of "
      "the vmapped chunks a run shared with the others of its job.",
    ]
    if "one_by_one_wall_seconds" in timing:
      a = timing["agreement"]
      lines += [
        "",
        f"The same {a['runs']} runs one after another, each alone, on one core, in the same "
        f"invocation: {timing['one_by_one_wall_seconds']:.1f} s wall, so the sweep took "
        f"**{1 / timing['speedup']:.2f}x** their time ({timing['speedup']:.2f}x faster).",
        "",
        markdown_table(
          ["seconds, summed over jobs", "side by side", "one by one"],
          [
            [what, f"{timing['side_by_side_' + key]:.1f}", f"{timing['one_by_one_' + key]:.1f}"]
            for what, key in (
              ("train chunks", "train_seconds"),
              ("compilation", "compile_seconds"),
              ("evaluation", "eval_seconds"),
            )
          ],
        ),
        "",
        f"Side by side against alone: final test accuracy within "
        f"{a['max_abs_final_test_accuracy']:.4f}, final test loss within "
        f"{a['max_abs_final_test_loss']:.2e} ({a['bitwise_equal_final_test_loss']} of "
        f"{a['runs']} bitwise equal). Not bitwise: vmapped, XLA:CPU runs the gradient's "
        "matrix products batched over runs, with another summation order; the first update "
        "differs by about one ulp and training amplifies it.",
      ]
  return "\n".join(lines) + "\n"


def csv_table(report: dict[str, Any]) -> str:
  """The same table with raw numbers, for a spreadsheet."""
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(["run", *report["swept"], *(k for k, _, _ in COLUMNS)])
  for run in report["runs"]:
    s = run["summary"]
    writer.writerow(
      [
        run["name"],
        *(run["values"][k] for k in report["swept"]),
        *("" if s.get(k) is None else s[k] for k, _, _ in COLUMNS),
      ]
    )
  return out.getvalue()
