"""Table 1 of the MNIST-1D paper: our runs summarized next to the paper's numbers."""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

# Relative training cost per model on CPU (seconds for 6000 steps, results/speed_vs_torch.md),
# used only to spread the models over the cores.
EXPECTED_SECONDS = {"logistic": 0.1, "mlp": 0.6, "cnn": 2.0, "gru": 6.6}


def assign_cores(jobs: Sequence[tuple[str, str]], cores: Sequence[int]
                 ) -> dict[tuple[str, str], int]:
  """Longest first, each (model, variant) job to the core with the least expected work so far."""
  load = {c: 0.0 for c in cores}
  out = {}
  for job in sorted(jobs, key=lambda j: -EXPECTED_SECONDS.get(j[0], 1.0)):
    core = min(load, key=load.get)
    load[core] += EXPECTED_SECONDS.get(job[0], 1.0)
    out[job] = core
  return out


def merge_jobs(done: Mapping[tuple[str, str], dict], models: Sequence[str],
               variants: Sequence[str]) -> dict[str, dict]:
  """Per model: the members of its variant jobs in order, their accuracies, summed seconds."""
  out = {}
  for model in models:
    parts = [done[(model, v)] for v in variants]
    merged = {k: [x for p in parts for x in p[k]] for k in
              ("members", "final_test_accuracy", "final_test_loss", "best_test_accuracy",
               "best_step")}
    for k in ("train_seconds", "compile_seconds", "eval_seconds", "wall_seconds"):
      merged[k] = sum(p[k] for p in parts)
    merged["cached"] = all(p.get("cached") for p in parts)
    merged["params"] = parts[0]["params"]
    out[model] = merged
  return out


def summarize(results: Mapping[str, dict], paper: Mapping[str, Any], models: Sequence[str]
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
      rows.append({
          "model": model, "variant": variant, "seeds": len(idx),
          "final": final.tolist(), "final_mean": float(final.mean()), "final_sd": sd(final),
          "best_mean": float(best.mean()), "best_sd": sd(best),
          "paper_mean": float(paper_mean), "paper_sd": float(paper_sd),
          "difference": float(final.mean() - paper_mean),
          "within_2sd": bool(abs(final.mean() - paper_mean) <= 2 * paper_sd),
          "train_seconds_model": r["train_seconds"],
      })
  return rows


def markdown(report: dict[str, Any], torch: dict[str, Any] | None) -> str:
  from research.report import markdown_table
  rows, meta = report["rows"], report["provenance"]
  table = markdown_table(
      ["model", "variant", "ours, final step (mean ± sd)", "paper", "difference",
       "within 2 paper sd", "ours, best step", "seeds' finals"],
      [[r["model"], r["variant"], f"{r['final_mean']:.1f} ± {r['final_sd']:.1f}",
        f"{r['paper_mean']:.0f} ± {r['paper_sd']:.0f}", f"{r['difference']:+.1f}",
        "yes" if r["within_2sd"] else "**no**", f"{r['best_mean']:.1f} ± {r['best_sd']:.1f}",
        ", ".join(f"{a:.1f}" for a in r["final"])] for r in rows])
  per_model = report["per_model"]
  timing = markdown_table(
      ["model", "runs", "train s (all runs, compilation excluded)", "compile s", "eval s",
       "wall s in workers (summed over its two jobs)", "cached"],
      [[m, len(r["members"]), f"{r['train_seconds']:.1f}", f"{r['compile_seconds']:.1f}",
        f"{r['eval_seconds']:.1f}", f"{r['wall_seconds']:.1f}", "yes" if r.get("cached") else "no"]
       for m, r in per_model.items()])
  n_runs = sum(len(r["members"]) for r in per_model.values())
  lines = [f"# MNIST-1D, Table 1 reproduced ({n_runs} runs)", "", meta["markdown"], "",
           "Protocol (the public reference code): Adam lr 1e-2, batch 100 in sequential slices, "
           f"{report['settings']['num_steps']} steps, final-step test accuracy; seeds change the "
           "initialization only; the shuffled variant is one fixed permutation of the 40 "
           "positions applied to every sequence (train and test). sd is the sample standard "
           "deviation over seeds. Best step: the highest test accuracy among evaluations every "
           f"{report['settings']['eval_every']} steps (the paper's text mentions early stopping; "
           "its code reports the final step).", "", table, "",
           f"## Time: {report['wall_seconds']:.1f} s for this invocation", "",
           f"Wall time from the first worker's start to the last model's end, data generation and "
           f"compilation included, {meta['workers']} worker process(es), one per core.", "",
           timing, ""]
  lines += reading_notes(rows, per_model, root=os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  if meta["cached"]:
    lines += [f"This invocation reused {len(meta['cached'])} finished job(s) from its cache, so its "
              "time is not the reproduction's; run with `--fresh` to time all runs.", ""]
  elif torch:
    per_run = {r["model"]: r["torch_median"] for r in torch["records"]}
    single = {r["model"]: r["jax_median"] for r in torch["records"]}
    seeds_variants = {m: len(r["members"]) for m, r in per_model.items()}
    sequential = sum(per_run[m] * seeds_variants[m] for m in per_model if m in per_run)
    lines += ["### Against the independent PyTorch implementation", "",
              f"`results/speed_vs_torch.md` measured one PyTorch run per model on this machine "
              f"(one pinned thread, median of 3): " + ", ".join(
                  f"{m} {per_run[m]:.1f} s" for m in per_model if m in per_run) + ". The same "
              f"{n_runs} runs one after another would take about {sequential:.0f} s of training "
              f"alone (per-run medians x runs; seeds and the shuffled variant do not change a "
              f"step's cost): **{sequential / report['wall_seconds']:.1f}x** our wall time.", "",
              "Training side by side under `vmap` does not make a member cheaper on this CPU: "
              "per member, " + ", ".join(
                  f"{m} {per_model[m]['train_seconds'] / len(per_model[m]['members']):.1f} s "
                  f"(single run {single[m]:.1f} s)" for m in per_model if m in single)
              + ". Its gains here are one compilation per job instead of per run, and the jobs "
              "spread over both cores.", ""]
  return "\n".join(lines)


def reading_notes(rows: Sequence[dict], per_model: Mapping[str, dict], root: str) -> list[str]:
  """Where we match, where we do not and why, with the reference runs that show it."""
  row = {(r["model"], r["variant"]): r for r in rows}
  outside = [f"{r['model']} ({r['variant']})" for r in rows if not r["within_2sd"]]
  notes = ["## Reading the table", "",
           ("Every mean lies within two of the paper's standard deviations of its number."
            if not outside else "Outside two paper standard deviations: " + ", ".join(outside)
            + ".")]
  torch_ref = os.path.join(root, "results", "torch_reference.json")
  mlp = row.get(("mlp", "original"))
  if mlp and os.path.isfile(torch_ref):
    ref = {r["model"]: r for r in json.load(open(torch_ref))["results"]}
    if "mlp" in ref:
      notes += ["", f"MLP: ours {mlp['final_mean']:.1f} ± {mlp['final_sd']:.1f} at the final step "
                f"and {mlp['best_mean']:.1f} at the best evaluated step, against the paper's 68 ± 2. "
                f"The independent PyTorch implementation of the same protocol ends at "
                f"{100 * ref['mlp']['final_test_accuracy']:.1f} % (`results/torch_reference.md`, seed "
                f"0), as the public reference code does (about 64 %): the protocol, not this "
                f"implementation, puts the MLP near 64 %, and even the best step of each run falls "
                f"short of 68, so early stopping at this resolution does not close the gap. We sit "
                f"at the low edge of the paper's band."]
  gru = row.get(("gru", "shuffled"))
  files = sorted(glob.glob(os.path.join(root, "results", "torch_reference_gru_shuffled", "*.json")))
  if gru and files:
    accs = [100 * json.load(open(f))["results"][0]["final_test_accuracy"] for f in files]
    notes += ["", f"GRU on the shuffled variant: ours {gru['final_mean']:.1f} ± {gru['final_sd']:.1f} "
              f"against 57 ± 2. The PyTorch implementation on the same shuffled data ends at "
              f"{', '.join(f'{a:.1f}' for a in accs)} % over {len(accs)} seeds (mean "
              f"{np.mean(accs):.1f}; `results/torch_reference_gru_shuffled/`): the public protocol "
              f"lands near 53 % here, so our mean sits at the paper's lower edge for the same "
              f"reason as the MLP's."]
  close = [f"{r['model']} ({r['variant']})" for r in rows if abs(r["difference"]) <= r["paper_sd"]]
  notes += ["", "Within one paper standard deviation: " + (", ".join(close) or "none") + ". "
            "Logistic regression does not depend on the order of its inputs, so its two variants "
            "agree; the CNN and GRU lose about 40 points on the shuffled sequences, as in the "
            "paper.", ""]
  return notes
