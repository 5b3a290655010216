"""Training speed of `scripts/train.py` against the independent PyTorch reference, both pinned to
the same core, run alternately; medians over repeats (`scripts/bench_vs_torch.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Callable, Sequence

import numpy as np

from research import workdir as workdir_lib
from research.outputs import json_text, markdown_table, write_all
from research.provenance import provenance
from research.studies import StudyError


def run(cmd: list[str], root: str) -> None:
  """Runs `cmd` in the checkout `root`; its last stderr line is the error when it fails."""
  result = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
  if result.returncode:
    last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise StudyError(f"{' '.join(cmd)} failed: {last}")


def steady_state_seconds(workdir: str, steps: int) -> float:
  """The median chunk step time from the run's TensorBoard events, times the step count."""
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  acc = EventAccumulator(workdir, size_guidance={"scalars": 0})
  acc.Reload()
  return float(np.median([e.value for e in acc.Scalars("train_speed/step_time_ms")])) * steps / 1e3


def time_against_torch(
  models: Sequence[str], repeats: int, core: int, root: str, log: Callable[[str], None] = print
) -> dict[str, dict[str, Any]]:
  """Per model: PyTorch's and our train seconds for every repeat, and final accuracies.

  `root` is the checkout whose scripts/ and experiments/ run (the entry point passes its own):
  the installed package does not know where a checkout is.
  """
  pin = ["taskset", "-c", str(core), sys.executable]
  rows = {
    m: {"torch": [], "jax": [], "jax_steady": [], "torch_acc": None, "jax_acc": None}
    for m in models
  }
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(repeats):
      for m in models:
        torch_json = os.path.join(tmp, f"torch_{m}_{r}.json")
        workdir = os.path.join(tmp, f"jax_{m}_{r}")
        torch_cmd = pin + [
          "scripts/bench_torch_reference.py",
          "--models",
          m,
          "--steps",
          "6000",
          "--out",
          torch_json,
          "--md",
          torch_json + ".md",
        ]
        jax_cmd = pin + [
          "scripts/train.py",
          "--config",
          f"experiments/mnist1d_{m}.py",
          "--workdir",
          workdir,
          "--threads",
          "1",
          "--no-progress",
        ]
        for cmd in [torch_cmd, jax_cmd] if r % 2 == 0 else [jax_cmd, torch_cmd]:
          run(cmd, root)
        rec = [x for x in json.load(open(torch_json))["results"] if x["model"] == m][0]
        summary = workdir_lib.read_summary(workdir)
        row = rows[m]
        row["torch"].append(rec["train_seconds"])
        row["jax"].append(summary["train_seconds"])
        row["jax_steady"].append(steady_state_seconds(workdir, summary["steps"]))
        row["torch_acc"] = rec["final_test_accuracy"]
        row["jax_acc"] = summary["final_test_accuracy"]
        log(
          f"repeat {r} {m:8s} torch {rec['train_seconds']:7.2f} s   "
          f"jax {summary['train_seconds']:6.2f} s "
          f"(steady {row['jax_steady'][-1]:5.2f} s)"
        )

  return rows


def write_speed_report(
  rows: dict[str, dict[str, Any]], out: str, core: int, repeats: int, argv: Sequence[str]
) -> list[dict[str, Any]]:
  """OUT.json and OUT.md: medians, ratios and accuracies per model."""
  models = list(rows)
  meta = provenance(argv, core=core)
  table, records = [], []
  for m in models:
    row = rows[m]
    t, j, js = (float(np.median(row[k])) for k in ("torch", "jax", "jax_steady"))
    records.append(
      {
        "model": m,
        "torch_seconds": row["torch"],
        "jax_train_seconds": row["jax"],
        "jax_steady_state_seconds": row["jax_steady"],
        "torch_median": t,
        "jax_median": j,
        "jax_steady_median": js,
        "speedup": t / j,
        "speedup_steady": t / js,
        "torch_final_test_accuracy": row["torch_acc"],
        "jax_final_test_accuracy": row["jax_acc"],
      }
    )
    table.append(
      [
        m,
        f"{t:.2f}",
        f"{j:.2f}",
        f"{js:.2f}",
        f"{t / j:.1f}x",
        f"{t / js:.1f}x",
        f"{row['torch_acc']:.3f}",
        f"{row['jax_acc']:.3f}",
      ]
    )
  markdown = (
    (
      "# Training speed: this codebase vs an independent PyTorch implementation\n\n"
      "MNIST-1D reference protocol (Adam 1e-2, batch 100 sequential, 6000 steps), both "
      f"pinned to CPU core {core} with one thread, run alternately, {repeats} "
      "repeats, medians. Compilation (JAX) and warm-up (PyTorch) excluded; evaluation "
      "excluded on both sides. *JAX train.py* is summary.json's train_seconds of a default "
      "run (the train loop waits for checkpoint saves outside its timed chunks); *steady* is "
      "the median chunk "
      "step time x 6000.\n\n" + meta["markdown"] + "\n\n"
    )
    + markdown_table(
      [
        "model",
        "PyTorch s",
        "JAX train.py s",
        "JAX steady s",
        "speedup",
        "speedup (steady)",
        "PyTorch acc",
        "JAX acc",
      ],
      table,
    )
    + "\n"
  )
  # Both or neither: a failure part-way leaves the old pair, not a new table beside old records.
  write_all({out + ".json": json_text({"meta": meta, "records": records}), out + ".md": markdown})
  return records
