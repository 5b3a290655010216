"""Training speed against the independent PyTorch reference, both pinned to the same CPU core.

For each repeat and model, runs `scripts/bench_torch_reference.py` and `scripts/train.py` (the
real training entry point, default config) one after the other under `taskset -c CORE`, one
thread each, alternating which goes first. Reports medians over repeats and the ratio. For the
JAX run it reports `train_seconds` from summary.json (compilation, evaluation and waiting for
checkpoint saves excluded) and the steady-state figure: the median per-chunk step time from the
run's TensorBoard events times the step count.

  python scripts/bench_vs_torch.py --models cnn --repeats 3 --out results/speed_vs_torch
Needs torch (pip install -e '.[reference]').
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

# The repository checkout: the scripts run from here (the package itself is installed).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd: list[str]) -> None:
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  if result.returncode:
    sys.exit(f"error: {' '.join(cmd)} failed:\n{result.stderr[-2000:]}")


def steady_state_seconds(workdir: str, steps: int) -> float:
  import numpy as np
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  acc = EventAccumulator(workdir, size_guidance={"scalars": 0})
  acc.Reload()
  return float(np.median([e.value for e in acc.Scalars("perf/step_time_ms")])) * steps / 1e3


def main() -> None:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--models", default="cnn", help="comma list of logistic, mlp, cnn, gru")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--core", type=int, default=0, help="CPU core both sides are pinned to")
  p.add_argument("--out", default="results/speed_vs_torch", help="writes OUT.json and OUT.md")
  args = p.parse_args()
  try:
    import torch  # noqa: F401
  except ImportError:
    sys.exit("error: torch is not installed; pip install -e '.[reference]'")
  models = args.models.split(",")
  for m in models:
    if m not in ("logistic", "mlp", "cnn", "gru"):
      sys.exit(f"error: unknown model {m!r}; choose from logistic, mlp, cnn, gru")
  pin = ["taskset", "-c", str(args.core), sys.executable]
  rows = {
    m: {"torch": [], "jax": [], "jax_steady": [], "torch_acc": None, "jax_acc": None}
    for m in models
  }
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.repeats):
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
          run(cmd)
        rec = [x for x in json.load(open(torch_json))["results"] if x["model"] == m][0]
        summary = json.load(open(os.path.join(workdir, "summary.json")))
        row = rows[m]
        row["torch"].append(rec["train_seconds"])
        row["jax"].append(summary["train_seconds"])
        row["jax_steady"].append(steady_state_seconds(workdir, summary["steps"]))
        row["torch_acc"] = rec["final_test_accuracy"]
        row["jax_acc"] = summary["final_test_accuracy"]
        print(
          f"repeat {r} {m:8s} torch {rec['train_seconds']:7.2f} s   "
          f"jax {summary['train_seconds']:6.2f} s "
          f"(steady {row['jax_steady'][-1]:5.2f} s)",
          flush=True,
        )

  import numpy as np

  from research.provenance import markdown_table, provenance, write_json

  meta = provenance(sys.argv, core=args.core)
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
  write_json(args.out + ".json", {"meta": meta, "records": records})
  with open(args.out + ".md", "w") as f:
    f.write(
      "# Training speed: this codebase vs an independent PyTorch implementation\n\n"
      "MNIST-1D reference protocol (Adam 1e-2, batch 100 sequential, 6000 steps), both "
      f"pinned to CPU core {args.core} with one thread, run alternately, {args.repeats} "
      "repeats, medians. Compilation (JAX) and warm-up (PyTorch) excluded; evaluation "
      "excluded on both sides. *JAX train.py* is summary.json's train_seconds of a default "
      "run (the train loop waits for checkpoint saves outside its timed chunks); *steady* is "
      "the median chunk "
      "step time x 6000.\n\n" + meta["markdown"] + "\n\n"
    )
    f.write(
      markdown_table(
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


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
