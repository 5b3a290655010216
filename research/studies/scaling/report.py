"""The scaling study's checks before anything trains, and what it writes: scaling.json,
scaling.md and the figures (each re-made by the command written in scaling.md)."""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any, Sequence

import numpy as np

from research.studies.scaling import ScalingError
from research.studies.scaling.grid import (
  PRESETS,
  Preset,
  check_fits_memory,
  custom_preset,
  parse_budgets,
  parse_sizes,
)
from research.studies.scaling.law import PUBLISHED, Law

FIGURES = ("loss_vs_tokens", "isoflop", "surface", "demand")
FILES = ("scaling.json", "scaling.md", *(f"{f}.png" for f in FIGURES))


def prepare(
  preset_name: str, sizes: str, budgets: str, text: str, out: str, workdir: str
) -> tuple[Preset, dict[str, Any]]:
  """Every check the command can fail before it trains: the grid, memory, the corpus, OUT."""
  from research.outputs import check_output_dir

  base = PRESETS[preset_name]
  overrides: tuple[str, ...] = ()
  if text:
    corpus = _text_record(text)
    overrides = ("data.name=text", f"data.path={os.path.abspath(text)}")
  else:
    from research.data.source_code import load_source_code_corpus

    _, corpus = load_source_code_corpus()
  preset = custom_preset(
    base,
    parse_sizes(sizes) if sizes.strip() else None,
    parse_budgets(budgets, base.tokens_per_step) if budgets.strip() else None,
    overrides,
  )
  if len(preset.sizes) < 2 or len(preset.budget_steps) < 2:
    raise ScalingError(
      f"the grid has {len(preset.sizes)} size(s) x {len(preset.budget_steps)} budget(s); the law "
      f"needs at least 2 of each (and 4 runs): give more --sizes or --budgets"
    )
  from research.config import load_config

  config = load_config(preset.spec, preset.overrides)
  check_fits_memory(preset.sizes, corpus["vocab_size"], config.batch_size, config.model.n_ctx)
  check_output_dir(out, "--out", names=FILES, runs=[workdir])
  return preset, corpus


def _text_record(path: str) -> dict[str, Any]:
  from research.data.text import load_text_corpus

  corpus = load_text_corpus(path)  # a DataError, one line, for a path that is not UTF-8 text
  with open(path, "rb") as f:
    raw = f.read()
  return {
    "path": os.path.abspath(path),
    "sha256": hashlib.sha256(raw).hexdigest(),
    "bytes": {"total": len(raw)},
    "vocab_size": corpus.vocab_size,
    "level": "character",
  }


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
    files[os.path.join(out, f"{name}.png")] = _figure_bytes(name, result)
  os.makedirs(out, exist_ok=True)
  write_all(files)


# ----------------------------------------------------------------------------------------------
# Markdown


def _law(result: dict) -> Law:
  a3 = result["fit"]["approach3"]
  return Law(a3["E"], a3["A"], a3["B"], a3["alpha"], a3["beta"])


def _g(x: float, digits: int = 3) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "n/a"
  return f"{x:.{digits}g}"


def markdown(r: dict[str, Any], provenance_md: str) -> str:
  from research.outputs import markdown_table

  law = _law(r)
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
  lines += _comparison_section(r, law)
  lines += _residual_section(fit)
  lines += ["![IsoFLOP view](isoflop.png) ![the fitted surface](surface.png)", ""]
  lines += _cost_section(costs)
  lines += _plan_section(plan)
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


def _residual_section(fit: dict) -> list[str]:
  from research.outputs import markdown_table

  rows = [
    [
      f"{int(x['params']):,}",
      x["runs"],
      f"{100 * x['mean_rel_residual']:+.2f} %",
      f"{100 * x['max_abs_rel_residual']:.2f} %",
    ]
    for x in fit["residuals_by_size"]
  ]
  return [
    "Where the law holds: each size's runs against the fit (observed - fitted) / fitted. A size "
    "the law misses shows a bias of one sign.",
    "",
    markdown_table(["N", "runs", "mean residual", "worst"], rows, "rrrr"),
    "",
  ]


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
    f"- Recommended model cheaper than the Chinchilla-optimal one at this demand: {verdict_cost} "
    f"({c['recommended_cost_s']:.4g} s against {c['chinchilla_cost_s']:.4g} s).",
    "",
  ]


# ----------------------------------------------------------------------------------------------
# Figures


def _figure_bytes(name: str, r: dict) -> bytes:
  import io

  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig = {"loss_vs_tokens": _fig_loss, "isoflop": _fig_isoflop, "surface": _fig_surface,
         "demand": _fig_demand}[name](plt, r)  # fmt: skip
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  return buf.getvalue()


def _sizes(r: dict) -> list[tuple[str, int]]:
  seen = {}
  for g in r["grid"]:
    seen[g["size"]] = g["params"]
  return sorted(seen.items(), key=lambda kv: kv[1])


def _fig_loss(plt, r):
  law = _law(r)
  fig, ax = plt.subplots(figsize=(7, 4.5))
  colors = plt.cm.viridis(np.linspace(0, 0.9, len(_sizes(r))))
  for (size, n), color in zip(_sizes(r), colors):
    runs = sorted((g for g in r["grid"] if g["size"] == size), key=lambda g: g["tokens"])
    d = np.array([g["tokens"] for g in runs], float)
    ax.plot(d, [g["val_loss"] for g in runs], "o", color=color, label=f"{size}: N={n:,}")
    for g in runs:
      if g["curve"]["tokens"]:
        ax.plot(g["curve"]["tokens"], g["curve"]["val_loss"], "-", color=color, alpha=0.25, lw=1)
    dd = np.geomspace(d.min() / 1.5, d.max() * 1.5, 50)
    ax.plot(dd, law.loss(n, dd), "--", color=color, lw=1)
  ax.set_xscale("log")
  ax.set_xlabel("training tokens D")
  ax.set_ylabel("validation loss (nats/byte)")
  ax.set_title("Final loss per run (dots), learning curves (faint), fitted law (dashed)")
  ax.legend(fontsize=7)
  return fig


def _fig_isoflop(plt, r):
  law = _law(r)
  fig, ax = plt.subplots(figsize=(7, 4.5))
  c = np.array([6.0 * g["params"] * g["tokens"] for g in r["grid"]])
  levels = np.geomspace(c.min(), c.max(), 5)
  n_all = np.array([p for _, p in _sizes(r)], float)
  nn = np.geomspace(n_all.min() / 2, n_all.max() * 2, 200)
  colors = plt.cm.plasma(np.linspace(0, 0.85, len(levels)))
  for level, color in zip(levels, colors):
    ax.plot(nn, law.loss(nn, level / (6 * nn)), "-", color=color, label=f"C = {level:.2g} FLOPs")
    n_opt, _ = law.compute_optimal(level)
    ax.plot([n_opt], [law.loss(n_opt, level / (6 * n_opt))], "k*", ms=8)
    near = np.abs(np.log(c / level)) < np.log(np.sqrt(levels[1] / levels[0]))
    pts = [g for g, k in zip(r["grid"], near) if k]
    ax.plot([g["params"] for g in pts], [g["val_loss"] for g in pts], "o", color=color, ms=5)
  ax.set_xscale("log")
  ax.set_xlabel("non-embedding parameters N")
  ax.set_ylabel("validation loss (nats/byte)")
  ax.set_title("IsoFLOP view: the fit at fixed compute (lines), runs near it (dots), optimum (*)")
  ax.legend(fontsize=7)
  return fig


def _fig_surface(plt, r):
  law = _law(r)
  fig, ax = plt.subplots(figsize=(7, 4.5))
  n = np.array([g["params"] for g in r["grid"]], float)
  d = np.array([g["tokens"] for g in r["grid"]], float)
  nn = np.geomspace(n.min() / 2, n.max() * 2, 120)
  dd = np.geomspace(d.min() / 2, d.max() * 2, 120)
  grid_n, grid_d = np.meshgrid(nn, dd)
  cs = ax.contour(grid_n, grid_d, law.loss(grid_n, grid_d), levels=12, cmap="viridis")
  ax.clabel(cs, fontsize=7, fmt="%.2f")
  resid = np.array([g["val_loss"] for g in r["grid"]]) - law.loss(n, d)
  sc = ax.scatter(n, d, c=resid, cmap="coolwarm", vmin=-np.abs(resid).max(),
                  vmax=np.abs(resid).max(), edgecolors="k")  # fmt: skip
  fig.colorbar(sc, ax=ax, label="observed - fitted loss")
  cc = np.geomspace((6 * n * d).min(), (6 * n * d).max(), 50)
  n_opt, d_opt = law.compute_optimal(cc)
  ax.plot(n_opt, d_opt, "k--", label="compute optimum")
  ax.plot(nn, 20 * nn, ":", color="gray", label="20 tokens/parameter")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlim(nn[0], nn[-1])
  ax.set_ylim(dd[0], dd[-1])
  ax.set_xlabel("non-embedding parameters N")
  ax.set_ylabel("training tokens D")
  ax.set_title("Fitted L(N, D) (contours) and the runs (dots, by residual)")
  ax.legend(fontsize=7, loc="lower right")
  return fig


def _fig_demand(plt, r):
  plan = r["plan"]
  fig, axes = plt.subplots(1, 3, figsize=(13, 4))
  curves = {"flops, continuous N": plan["flops_continuous"], **plan["curves"]}
  for name, curve in curves.items():
    demand = [p["demand_tokens"] for p in curve]
    style = "k-" if name.startswith("flops, cont") else "-"
    axes[0].plot(demand, [p["optimum"]["params"] for p in curve], style, label=name, lw=1.3)
    axes[1].plot(demand, [p["optimum"]["tokens_per_param"] for p in curve], style, lw=1.3)
    axes[2].plot(demand, [100 * p["saving"] for p in curve], style, lw=1.3)
  for ax, label in zip(axes, ("optimal N", "tokens per parameter", "saving over Chinchilla (%)")):
    ax.set_xscale("log")
    ax.set_xlabel("inference demand (tokens served)")
    ax.set_ylabel(label)
  axes[0].set_yscale("log")
  axes[1].set_yscale("log")
  axes[0].legend(fontsize=6)
  fig.suptitle(f"The inference-aware optimum for target loss {plan['target_loss']:.2f}")
  return fig


__all__ = ["prepare", "write_report", "PUBLISHED"]
