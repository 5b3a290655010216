"""The scaling study's figures, drawn from its result (scaling.json's dict): loss against tokens,
the IsoFLOP view, the fitted surface and the optimum against demand. Apart from report.py so that
the markdown and the plots can each be read (and changed) alone."""

from __future__ import annotations

import numpy as np

from research.studies.scaling.law import Law

FIGURES = ("loss_vs_tokens", "isoflop", "surface", "demand")


def figure_png(name: str, result: dict) -> bytes:
  """One of FIGURES drawn from a scaling.json result, as PNG bytes (matplotlib loads only here)."""
  import io

  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig = {"loss_vs_tokens": _fig_loss, "isoflop": _fig_isoflop, "surface": _fig_surface,
         "demand": _fig_demand}[name](plt, result)  # fmt: skip
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  return buf.getvalue()


def law_of(result: dict) -> Law:
  """The approach-3 law a scaling.json result holds (the figures and scaling.md both draw on it)."""
  a3 = result["fit"]["approach3"]
  return Law(a3["E"], a3["A"], a3["B"], a3["alpha"], a3["beta"])


def _sizes(r: dict) -> list[tuple[str, int]]:
  seen = {}
  for g in r["grid"]:
    seen[g["size"]] = g["params"]
  return sorted(seen.items(), key=lambda kv: kv[1])


def _fig_loss(plt, r):
  law = law_of(r)
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
  return _loss_axes(
    fig,
    ax,
    "training tokens D",
    "Final loss per run (dots), learning curves (faint), fitted law (dashed)",
  )


def _fig_isoflop(plt, r):
  law = law_of(r)
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
  return _loss_axes(
    fig,
    ax,
    "non-embedding parameters N",
    "IsoFLOP view: the fit at fixed compute (lines), runs near it (dots), optimum (*)",
  )


def _loss_axes(fig, ax, xlabel: str, title: str):
  """Validation loss against a log axis: the two loss figures' common frame."""
  ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel("validation loss (nats/byte)")
  ax.set_title(title)
  ax.legend(fontsize=7)
  return fig


def _fig_surface(plt, r):
  law = law_of(r)
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
