"""Table 1 of the MNIST-1D paper: our runs summarized next to the paper's numbers."""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np


def summarize(
  results: Mapping[str, dict], paper: Mapping[str, Any], models: Sequence[str]
) -> list[dict[str, Any]]:
  """One row per model and variant: mean ± sd (sample, ddof=1) of final and best accuracy."""
  rows = []
  for model in models:
    r = results[model]
    variants = [m["variant"] for m in r["members"]]
    for variant in dict.fromkeys(variants):
      idx = [i for i, v in enumerate(variants) if v == variant]
      final = 100 * np.asarray(r["final_test_accuracy"])[idx]
      best = 100 * np.asarray(r["best_test_accuracy"])[idx]
      sd = lambda a: float(np.std(a, ddof=1)) if len(a) > 1 else 0.0  # noqa: E731
      paper_mean, paper_sd = paper[model][variant]
      rows.append(
        {
          "model": model,
          "variant": variant,
          "seeds": len(idx),
          "final": final.tolist(),
          "final_mean": float(final.mean()),
          "final_sd": sd(final),
          "best_mean": float(best.mean()),
          "best_sd": sd(best),
          "paper_mean": float(paper_mean),
          "paper_sd": float(paper_sd),
          "difference": float(final.mean() - paper_mean),
          "within_2sd": bool(abs(final.mean() - paper_mean) <= 2 * paper_sd),
          "train_seconds_model": r["train_seconds"],
        }
      )
  return rows


def markdown(report: dict[str, Any], root: str) -> str:
  """The table, its time and its notes; the notes cite reference runs in the checkout's results/
  (`root`)."""
  from research.outputs import markdown_table

  rows, meta = report["rows"], report["provenance"]
  table = markdown_table(
    [
      "model",
      "variant",
      "ours, final step (mean ± sd)",
      "paper",
      "difference",
      "within 2 paper sd",
      "ours, best step",
      "seeds' finals",
    ],
    [
      [
        r["model"],
        r["variant"],
        f"{r['final_mean']:.1f} ± {r['final_sd']:.1f}",
        f"{r['paper_mean']:.0f} ± {r['paper_sd']:.0f}",
        f"{r['difference']:+.1f}",
        "yes" if r["within_2sd"] else "**no**",
        f"{r['best_mean']:.1f} ± {r['best_sd']:.1f}",
        ", ".join(f"{a:.1f}" for a in r["final"]),
      ]
      for r in rows
    ],
  )
  per_model = report["per_model"]
  timing = markdown_table(
    [
      "model",
      "runs",
      "jobs",
      "train s (all runs, compilation excluded)",
      "compile s",
      "eval s",
      "wall s in workers (its jobs summed)",
      "train s per run",
      "cached",
    ],
    [
      [
        m,
        len(r["members"]),
        r["jobs"],
        f"{r['train_seconds']:.1f}",
        f"{r['compile_seconds']:.1f}",
        f"{r['eval_seconds']:.1f}",
        f"{r['wall_seconds']:.1f}",
        f"{r['train_seconds'] / len(r['members']):.2f}",
        "yes" if r.get("cached") else "no",
      ]
      for m, r in per_model.items()
    ],
  )
  n_runs = sum(len(r["members"]) for r in per_model.values())
  lines = [
    f"# MNIST-1D, Table 1 reproduced ({n_runs} runs)",
    "",
    meta["markdown"],
    f"- XLA flags in the workers: `{report['worker_xla_flags']}`",
    "",
    "Protocol (the public reference code): Adam lr 1e-2, batch 100 in sequential slices, "
    f"{report['settings']['num_steps']} steps, final-step test accuracy; seeds change the "
    "initialization only; the shuffled variant is one fixed permutation of the 40 "
    "positions applied to every sequence (train and test). sd is the sample standard "
    "deviation over seeds. Best step: the highest test accuracy among evaluations every "
    f"{report['settings']['eval_every']} steps (the paper's text mentions early stopping; "
    "its code reports the final step).",
    "",
    table,
    "",
    f"## Time: {report['wall_seconds']:.1f} s for this invocation",
    "",
    f"Wall time from the first worker's start to the last job's end, data generation and "
    f"compilation included: {meta['workers']} worker process(es), each pinned to its own "
    f"core with one XLA thread, taking the next job (one model's runs side by side under "
    f"`vmap`, longest first) when free.",
    "",
    timing,
    "",
  ]
  lines += reading_notes(rows, per_model, root=root)
  if meta["cached"]:
    lines += [
      f"This invocation reused {len(meta['cached'])} finished job(s) from its cache, so "
      "its time is not the reproduction's; run with `--fresh` to time all runs.",
      "",
    ]
  elif report.get("torch_reference"):
    lines += torch_comparison(report["torch_reference"], per_model, report["wall_seconds"])
  return "\n".join(lines)


def torch_comparison(
  ref: Mapping[str, Any], per_model: Mapping[str, dict], wall: float
) -> list[str]:
  """Our wall time against the same runs made one after another by the PyTorch reference."""
  per_run, whole = ref["per_run_seconds"], ref.get("whole_run_seconds")
  missing = [m for m in per_model if m not in per_run]
  runs = {m: len(r["members"]) for m, r in per_model.items() if m in per_run}
  sequential = sum(per_run[m] * n for m, n in runs.items())
  lines = ["### Against the independent PyTorch implementation", ""]
  if ref["source"] == "this invocation":
    lines.append(
      "Timed in this invocation, after our runs, on the same machine: one PyTorch run per model "
      "(`scripts/bench_torch_reference.py`, 6000 steps, one thread), each its own process "
      "pinned to one core, two at a time as our workers ran. Two figures per run: its training "
      "loop alone (the script's timing: no imports, data generation, warm-up or evaluation) and "
      "the whole run (the process from start to exit)."
    )
  else:
    lines.append(
      f"From `{ref['source']}` (measured {ref.get('date', 'earlier')}, not in this "
      "invocation: machine speed drifts between runs, so prefer `--torch-reference`)."
    )
  header = ["model", "PyTorch training loop s per run"]
  if whole:
    header.append("PyTorch whole run s")
  rows = []
  for m, n in runs.items():
    row = [m, f"{per_run[m]:.2f}"] + ([f"{whole[m]:.2f}"] if whole else [])
    rows.append(row + [n, f"{per_model[m]['train_seconds'] / n:.2f}"])
  from research.outputs import markdown_table

  lines += [
    "",
    markdown_table(header + ["runs", "ours: train s per run (side by side)"], rows),
    "",
    f"The same {sum(runs.values())} runs one after another would take about "
    f"{sequential:.0f} s of PyTorch training loops alone (per-run time x runs; seeds and "
    f"the shuffled variant do not change a step's cost): **{sequential / wall:.1f}x** our "
    f"wall time of {wall:.1f} s, which includes our data generation, compilation and "
    f"evaluation." + (f" No PyTorch time for: {', '.join(missing)}." if missing else ""),
  ]
  if whole:
    sequential_whole = sum(whole[m] * n for m, n in runs.items())
    lines.append(
      f"Counting each PyTorch run whole, as ours are: {sequential_whole:.0f} s, "
      f"**{sequential_whole / wall:.1f}x**."
    )
  lines.append("")
  return lines


def reading_notes(rows: Sequence[dict], per_model: Mapping[str, dict], root: str) -> list[str]:
  """Where we match, where we do not and why, with the reference runs that show it."""
  row = {(r["model"], r["variant"]): r for r in rows}
  outside = [f"{r['model']} ({r['variant']})" for r in rows if not r["within_2sd"]]
  notes = [
    "## Reading the table",
    "",
    (
      "Every mean lies within two of the paper's standard deviations of its number."
      if not outside
      else "Outside two paper standard deviations: " + ", ".join(outside) + "."
    ),
  ]
  torch_ref = os.path.join(root, "results", "torch_reference.json")
  mlp = row.get(("mlp", "original"))
  if mlp and os.path.isfile(torch_ref):
    ref = {r["model"]: r for r in json.load(open(torch_ref))["results"]}
    if "mlp" in ref:
      notes += [
        "",
        f"MLP: ours {mlp['final_mean']:.1f} ± {mlp['final_sd']:.1f} at the final step "
        f"and {mlp['best_mean']:.1f} at the best evaluated step, against the paper's "
        f"68 ± 2. The independent PyTorch implementation of the same protocol ends at "
        f"{100 * ref['mlp']['final_test_accuracy']:.1f} % "
        f"(`results/torch_reference.md`, seed 0), as the public reference code does "
        f"(about 64 %): the protocol, not this implementation, puts the MLP near 64 %, and "
        f"even the best step of each run falls short of 68, so early stopping at this "
        f"resolution does not close the gap. "
        + (
          "We sit at the low edge of the paper's band."
          if mlp["within_2sd"]
          else f"We sit {abs(mlp['difference']) - 2 * mlp['paper_sd']:.1f} points below "
          "the paper's two-sd band, where the protocol itself lands."
        ),
      ]
  gru = row.get(("gru", "shuffled"))
  files = sorted(glob.glob(os.path.join(root, "results", "torch_reference_gru_shuffled", "*.json")))
  if gru and files:
    accs = [100 * json.load(open(f))["results"][0]["final_test_accuracy"] for f in files]
    notes += [
      "",
      "GRU on the shuffled variant: "
      f"ours {gru['final_mean']:.1f} ± {gru['final_sd']:.1f} against 57 ± 2. The PyTorch "
      f"implementation on the same shuffled data ends at "
      f"{', '.join(f'{a:.1f}' for a in accs)} % over {len(accs)} seeds (mean "
      f"{np.mean(accs):.1f}; `results/torch_reference_gru_shuffled/`): the public protocol "
      f"lands near 53 % here, so our mean sits at the paper's lower edge for the same "
      f"reason as the MLP's.",
    ]
  close = [f"{r['model']} ({r['variant']})" for r in rows if abs(r["difference"]) <= r["paper_sd"]]
  notes += [
    "",
    "Within one paper standard deviation: " + (", ".join(close) or "none") + ". "
    "Logistic regression does not depend on the order of its inputs, so its two variants "
    "agree; the CNN and GRU lose about 40 points on the shuffled sequences, as in the "
    "paper.",
    "",
  ]
  return notes
