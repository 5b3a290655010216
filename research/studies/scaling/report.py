"""What the scaling study writes: scaling.json, scaling.md and the figures (drawn by figures.py;
each re-made by the command written in scaling.md)."""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

from research.studies.scaling.figures import FIGURES, figure_png, law_of
from research.studies.scaling.law import Law

FILES = ("scaling.json", "scaling.md", *(f"{f}.png" for f in FIGURES))


def write_report(result: dict[str, Any], out: str, argv: Sequence[str]) -> None:
  """OUT/scaling.json, OUT/scaling.md and the figures, all or none."""
  from research.outputs import json_text, write_all
  from research.provenance import provenance

  meta = provenance(argv, wall_seconds=result.get("seconds"))
  result["provenance"] = meta
  files: dict[str, str | bytes] = {
    os.path.join(out, "scaling.json"): json_text(result),
    os.path.join(out, "scaling.md"): markdown(result, meta["markdown"]),
  }
  for name in FIGURES:
    files[os.path.join(out, f"{name}.png")] = figure_png(name, result)
  os.makedirs(out, exist_ok=True)
  write_all(files)


# ----------------------------------------------------------------------------------------------
# Markdown


def _g(x: float, digits: int = 3) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "n/a"
  return f"{x:.{digits}g}"


def markdown(r: dict[str, Any], provenance_md: str) -> str:
  from research.outputs import markdown_table

  law = law_of(r)
  fit, plan, costs = r["fit"], r["plan"], r["costs"]
  a3 = fit["approach3"]
  corpus = r["corpus"]
  lines = [
    "# Inference-aware scaling on measured costs",
    "",
    "Which model size to train, and for how long, given how many tokens it will serve "
    "(Hoffmann et al. 2022; Sardana et al. 2024), with training and serving costs measured on "
    "this machine.",
    "",
    "## Corpus",
    "",
    _corpus_line(corpus),
    "",
    "## The grid",
    "",
    f"{len(r['grid'])} runs: {len(r['preset']['sizes'])} sizes x "
    f"{len(r['preset']['budget_steps'])} budgets, each its own run directory with a cosine "
    f"schedule to its own budget. Validation loss in nats per byte on the validation split "
    f"(held-out files). Train seconds exclude compilation and evaluation; the runs trained two at "
    f"a time, one per core.",
    "",
  ]
  rows = [
    [
      g["size"],
      f"{g['params']:,}",
      f"{g['tokens']:,}",
      f"{g['tokens'] / g['params']:,.0f}",
      f"{g['val_loss']:.4f}",
      f"{float(law.loss(g['params'], g['tokens'])):.4f}",
      f"{g['train_seconds']:.1f}",
    ]
    for g in sorted(r["grid"], key=lambda g: (g["params"], g["tokens"]))
  ]
  header = ["size", "N (non-emb.)", "tokens", "tokens/N", "val loss", "fit", "train s"]
  lines += [markdown_table(header, rows, "lrrrrrr"), ""]
  t = r["grid_timing"]
  lines += [
    f"Grid time: {t['sum_train_seconds'] / 60:.1f} min of training, "
    f"{t['sum_compile_seconds'] / 60:.1f} min compiling, {t['sum_eval_seconds'] / 60:.1f} min "
    f"evaluating (summed over runs); wall time {t['wall_seconds'] / 60:.1f} min on "
    f"{max((c['workers'] or 0) for c in t['calls'])} sweep workers (the calls that trained "
    f"runs; a re-run skips finished ones).",
    "",
    "![loss against tokens](loss_vs_tokens.png)",
    "",
    "## Fits",
    "",
  ]
  ci = a3["ci"]
  level = int(round(100 * a3.get("level", 0.9)))
  fit_rows = [
    [k, _g(a3[k], 4), f"[{_g(ci[k][0], 4)}, {_g(ci[k][1], 4)}]"]
    for k in ("E", "A", "B", "alpha", "beta")
  ]
  lines += [
    f"Approach 3: L(N, D) = E + A/N^alpha + B/D^beta, Huber (delta 1e-3) on log loss, L-BFGS "
    f"from the paper's grid of starts; {level} % bootstrap intervals over "
    f"{a3.get('samples', 0)} resamples of the {fit['runs']} runs"
    + (" (underdetermined: fewer than 6 runs)" if fit["runs"] < 6 else "")
    + ".",
    "",
    markdown_table(["", "fit", f"{level} % interval"], fit_rows, "lrr"),
    "",
  ]
  lowest = min(g["val_loss"] for g in r["grid"])
  if a3["E"] < 0.01 * lowest:
    lines += [
      f"E is not identified: the fit drives it to {a3['E']:.2g}, far below every loss the grid "
      f"reached (lowest {lowest:.3f}), and leaves the rest to the two power terms. No run is near "
      f"a floor: the large models saw at most {_largest_ratio(r):.0f} tokens per parameter. The "
      f"exponents' wide intervals say the same: this grid pins the law down loosely.",
      "",
    ]
  lines += _comparison_section(r, law)
  lines += _residual_section(r, law)
  lines += ["![IsoFLOP view](isoflop.png) ![the fitted surface](surface.png)", ""]
  lines += _cost_section(costs)
  lines += _plan_section(plan)
  if r.get("grid_findings"):
    lines += [_grid_findings_line(r["grid_findings"]), ""]
  lines += ["![optimal N against demand](demand.png)", ""]
  if r.get("check"):
    lines += _check_section(r["check"])
  lines += [
    "## Re-make",
    "",
    "Every file here (scaling.json, scaling.md and the figures) comes from the command below; "
    "re-running it resumes (finished runs are skipped, measured costs reused).",
    "",
    provenance_md,
    "",
  ]
  return "\n".join(lines)


def _corpus_line(c: dict) -> str:
  if "package" in c:
    b = c["bytes"]
    return (
      f"The source of {c['package']} {c['version']} as installed from the registry (pinned), read "
      f"as bytes ({c['vocab_size']} distinct): {sum(b.values()):,} bytes in "
      f"{sum(c['files'].values()):,} files, split by a hash of each file's path into train "
      f"{b['train']:,} / validation {b['val']:,} / test {b['test']:,} bytes (the test split is "
      f"never used). sha256 `{c['sha256']}`."
    )
  return (
    f"The user's text file {c['path']} ({c['bytes']['total']:,} bytes, {c['vocab_size']} "
    f"characters), sha256 `{c['sha256']}`."
  )


def _comparison_section(r: dict, law: Law) -> list[str]:
  fit = r["fit"]
  a1 = fit.get("approach1") or {}
  optimum = fit["compute_optimum_at_largest_run"]
  rows = [
    [
      "ours, approach 3",
      _g(law.alpha),
      _g(law.beta),
      _g(law.beta / (law.alpha + law.beta)),
      _g(law.alpha / (law.alpha + law.beta)),
      _g(optimum["tokens_per_param"]),
    ]
  ]
  env = a1.get("envelope", a1)
  if "a" in env.get("fit", env):
    f1 = env.get("fit", env)
    rows.append(
      [
        "ours, approach 1",
        "",
        "",
        _g(f1["a"]),
        _g(f1["b"]),
        _g(env.get("tokens_per_param_max_flops")),
      ]
    )
  for name, p in fit["published"].items():
    rows.append(
      [
        name,
        _g(p["alpha"]),
        _g(p["beta"]),
        _g(p["beta"] / (p["alpha"] + p["beta"])),
        _g(p["alpha"] / (p["alpha"] + p["beta"])),
        _g(p["tokens_per_param_at_same_compute"]),
      ]
    )
  from research.outputs import markdown_table

  return [
    f"Side by side with the published fits. a and b are the compute optimum's exponents "
    f"(N_opt ~ C^a, D_opt ~ C^b); tokens per parameter at the compute optimum for "
    f"C = {_g(optimum['flops'])} FLOPs, the grid's largest run (the published laws count every "
    f"parameter and subword tokens, so only exponents and ratios compare).",
    "",
    markdown_table(["fit", "alpha", "beta", "a", "b", "tokens/param"], rows, "lrrrrr"),
    "",
  ]


def _largest_ratio(r: dict) -> float:
  """Tokens per parameter of the largest size at the largest budget."""
  top = max(g["params"] for g in r["grid"])
  return max(g["tokens"] / g["params"] for g in r["grid"] if g["params"] == top)


def _residual_section(r: dict, law: Law) -> list[str]:
  from research.outputs import markdown_table

  fit = r["fit"]
  other = fit.get("without_smallest")
  others = {x["params"]: x for x in (other or {}).get("residuals_by_size", [])}
  largest = max(g["tokens"] for g in r["grid"])
  at_largest = {
    g["params"]: (g["val_loss"] - float(law.loss(g["params"], g["tokens"])))
    / float(law.loss(g["params"], g["tokens"]))
    for g in r["grid"]
    if g["tokens"] == largest
  }
  rows = []
  for x in fit["residuals_by_size"]:
    row = [
      f"{int(x['params']):,}",
      x["runs"],
      f"{100 * x['mean_rel_residual']:+.2f} %",
      f"{100 * x['max_abs_rel_residual']:.2f} %",
      f"{100 * at_largest[x['params']]:+.2f} %" if x["params"] in at_largest else "",
    ]
    if other:
      y = others.get(x["params"])
      excluded = x["params"] < other["min_params"]
      row.append(f"{100 * y['mean_rel_residual']:+.2f} %{' (left out)' if excluded else ''}")
    rows.append(row)
  header = ["N", "runs", "mean residual", "worst", f"at {largest / 1e6:.1f} M tokens"]
  lines = [
    "Where the law holds: each size's runs against the fit, (observed - fitted) / fitted: the "
    "mean, the worst run, and the run at the largest budget (where a small model saturates and a "
    "large one is still learning fast)."
  ]
  if other:
    header.append(f"fit on N >= {other['min_params']:,.0f}: mean")
    lines[0] += (
      f" The last column refits without the sizes below {other['min_params']:,.0f} parameters "
      f"({other['runs']} runs: alpha {other['alpha']:.3f}, beta {other['beta']:.3f}, E "
      f"{other['E']:.3g}) and shows how far the left-out sizes then fall from it."
    )
  return [*lines, "", markdown_table(header, rows, "r" * len(header)), ""]


def _cost_section(costs: dict) -> list[str]:
  from research.outputs import markdown_table

  rows = []
  for size, c in costs["per_size"].items():
    rows.append(
      [
        size,
        f"{c['params']:,}",
        f"{1e6 * c['train_seconds_per_token']:.2f}",
        f"{1e6 * c['grid_train_seconds_per_token']:.2f}",
        f"{1e6 * c['serve_realtime_seconds_per_token']:.1f}",
        f"{1e6 * c['serve_best_seconds_per_token']:.2f} ({c['best_slots']} slots)",
        f"{c['serve_realtime_seconds_per_token'] / c['train_seconds_per_token']:.0f}",
      ]
    )
  s = costs["settings"]
  return [
    "## Measured costs per size",
    "",
    f"One worker pinned to one core, one XLA thread, alone on the machine, each size's longest "
    f"run: the train step scanned over 32 batches as the loop runs it (median of 5 chunks); the "
    f"serving engine's time per output token at one slot (p50 over {s['sequences']} requests of "
    f"{s['prompt_tokens']} prompt + {s['new_tokens']} new tokens), and its best tokens/s with "
    f"every slot busy over slot counts {s['slots']}. Compilation excluded throughout. The grid "
    f"column is the grid runs' own figure (two at a time, beside other work).",
    "",
    markdown_table(
      [
        "size",
        "N",
        "train us/token",
        "grid train us/token",
        "batch-1 us/token",
        "best-batch us/token",
        "batch-1 / train",
      ],
      rows,
      "lrrrrrr",
    ),  # fmt: skip
    "",
  ]


def _plan_section(plan: dict) -> list[str]:
  from research.outputs import markdown_table

  target = plan["target_loss"]
  lines = [
    "## The inference-aware optimum",
    "",
    f"Target loss {target:.2f} nats/byte. For each demand (tokens served over the model's life) "
    f"the model among the grid's sizes, and its training tokens, that reaches the target at the "
    f"least training + serving cost; the Chinchilla-optimal model is the same search at demand "
    f"0 (training cost only), costed at that demand. FLOPs: 6N per training token, 2N per served "
    f"token. Seconds: measured, one core. Dollars: this machine at its assumed price, and "
    f"accelerator profiles from FLOPs at assumed utilizations (projections, not measurements).",
    "",
  ]
  rows = []
  for name, curve in plan["curves"].items():
    for point in _pick(curve):
      o, c = point["optimum"], point["chinchilla"]
      rows.append(
        [
          name,
          _g(point["demand_tokens"], 2),
          f"{int(o['params']):,}",
          _g(o["tokens_per_param"]),
          f"{int(c['params']):,}",
          _g(c["tokens_per_param"]),
          f"{100 * point['saving']:.1f} %",
        ]
      )
  lines += [
    markdown_table(
      ["cost", "demand", "optimal N", "tokens/N", "Chinchilla N", "tokens/N", "saving"],
      rows,
      "lrrrrrr",
    ),
    "",
    "Sardana's findings on our data:",
    "",
  ]
  for name, f in plan["findings"].items():
    lines.append(f"- {name}: " + _findings_line(f))
  lines.append("- flops, continuous N: " + _findings_line(plan["findings_flops_continuous"]))
  lines.append("")
  return lines


def _grid_findings_line(g: dict) -> str:
  sizes = g["per_size"]
  if not sizes:
    return "- loss keeps falling past 20 tokens per parameter: no size has two runs past 20"
  most = max((v["max_tokens_per_param_still_falling"] or 0) for v in sizes.values())
  verdict = "holds" if g["loss_falls_past_20_tokens_per_param"] else "does not hold"
  return (
    f"- loss keeps falling past 20 tokens per parameter: {verdict} for every one of the "
    f"{len(sizes)} sizes with two or more runs past 20 (still falling at {most:,.0f} tokens per "
    f"parameter)"
    if verdict == "holds"
    else f"- loss keeps falling past 20 tokens per parameter: {verdict}: "
    + ", ".join(f"{k} {'falls' if v['always_falls'] else 'stalls'}" for k, v in sizes.items())
  )


def _findings_line(f: dict) -> str:
  words = {
    "optimal_params_fall": "optimal N falls as demand grows",
    "tokens_per_param_rise": "tokens per parameter rise",
    "reduces_to_chinchilla": "reduces to Chinchilla at low demand",
  }
  return "; ".join(
    f"{text}: {'holds' if f.get(k) else 'does not hold'}" for k, text in words.items()
  )


def _pick(curve: list[dict]) -> list[dict]:
  """A few demands for the table: every third point of the curve where the answer changes."""
  keep, last = [], None
  for point in curve:
    key = round(point["optimum"]["params"])
    if key != last:
      keep.append(point)
      last = key
  return keep[:8] if keep else curve[:1]


def _miss_lines(c: dict) -> list[str]:
  """Why a check model's loss missed the prediction, from the grid's own run of its size."""
  out = []
  for role, g in (c.get("miss_explained_by_grid") or {}).items():
    x = c[role]
    lo, hi = x["predicted_loss_interval"]
    if lo <= x["measured_loss"] <= hi:
      continue
    miss = (x["measured_loss"] - x["predicted_loss"]) / x["predicted_loss"]
    out.append(
      f"  - {role} ({x['size']}): measured {100 * miss:+.1f} % from the prediction; the grid's "
      f"own {g['grid_run']} ({g['tokens']:,} tokens) sat {100 * g['relative_residual']:+.1f} % "
      f"from the fit"
      + (
        ": the same sign, so the miss is the law's error at this size, not the check's."
        if miss * g["relative_residual"] > 0
        else "."
      )
    )
  return out


def _check_section(c: dict) -> list[str]:
  from research.outputs import markdown_table

  rows = []
  for role in ("recommended", "chinchilla"):
    x = c[role]
    lo, hi = x["predicted_loss_interval"]
    rows.append(
      [
        role,
        x["size"],
        f"{x['params']:,}",
        f"{x['trained_tokens']:,}",
        f"{x['predicted_loss']:.4f} [{_g(lo, 4)}, {_g(hi, 4)}]",
        f"{x['measured_loss']:.4f}",
        f"{x['predicted_cost_s']:.4g}",
        f"{x['measured_cost_s']:.4g}",
      ]
    )
  verdict_loss = "yes" if c["reaches_target_within_interval"] else "no"
  verdict_cost = "yes" if c["recommended_cheaper"] else "no"
  return [
    "## Check: train what the planner recommends",
    "",
    f"{c['rule']}. Target {c['target_loss']:.2f}, demand {c['demand_tokens']:.3g} tokens, cost: "
    f"{c['cost_model']}. Measured cost = the run's measured train seconds + measured serving "
    f"seconds per token x demand.",
    "",
    markdown_table(
      [
        "model",
        "size",
        "N",
        "tokens",
        "predicted loss [interval]",
        "measured loss",
        "predicted cost s",
        "measured cost s",
      ],
      rows,
      "llrrrrrr",
    ),  # fmt: skip
    "",
    f"- Measured loss within the fit's interval: {verdict_loss}.",
    *_miss_lines(c),
    f"- Recommended model cheaper than the Chinchilla-optimal one at this demand: {verdict_cost} "
    f"({c['recommended_cost_s']:.4g} s against {c['chinchilla_cost_s']:.4g} s).",
    "",
  ]
