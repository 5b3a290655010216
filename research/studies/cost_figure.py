"""The main job's report as one figure of four panels (`cost_report.plot_report` saves it)."""

from __future__ import annotations

from typing import Any

from research.studies.cost_report import engine_of, si


def report_figure(r: dict[str, Any]):
  """Four panels, one question each: time per example (linear, values and p99 whiskers), FLOPs
  per example, break-even in FLOPs and in seconds, utilization of the measured peak."""
  from research.bench import figures

  f, t, u, be = r["flops"], r["time"], r["utilization"], r["break_even_predictions"]
  inf, train = t["inference"], t["train_seconds_per_example"] * 1e6
  modes = _distinct_modes(inf)
  colors = {"realtime": "C0", "train_batch": "C1", "batch": "C2"}
  fig, ((a, b), (c, d)) = figures.plt.subplots(2, 2, figsize=(13, 7.5))
  us = [train] + [inf[m]["seconds_per_prediction"] * 1e6 for m in modes]
  figures.bar_panel(
    a,
    ["training step\n(its share per example)"] + [_mode_label(inf, m) for m in modes],
    us,
    lambda v: f"{v:.3g} µs",
    whiskers=[None] + [_p99_us(t, inf[m]) for m in modes],
    notes=[""] + [_vs_training(v, train) for v in us[1:]],
    colors=["C3"] + [colors[m] for m in modes],
    xlabel="µs per example (linear; whisker to p99 where measured)",
    title="time per example on this machine",
  )
  figures.bar_panel(
    b,
    ["train step\n(forward, backward, update)", "inference\n(forward)"],
    [f["train_step_per_example"], f["forward_per_example"]],
    lambda v: si(v, "FLOP"),
    colors=["C3", "C2"],
    tick_fmt=si,
    xlabel="FLOPs per example (analytic, linear)",
    title=f"FLOPs per example: a train step is {f['train_to_forward_ratio']:.2f}x a forward pass",
  )
  flops = "FLOPs (forward vs the training run)"
  counts = {flops: (be["flops"], "C4", "break_even_flops")}
  for m in modes:
    key = "seconds_realtime" if m == "realtime" else f"seconds_{m}"
    counts[f"seconds, {_mode_label(inf, m, ' ')}"] = (be[key], colors[m], f"break_even_{key}")
  figures.break_even_panel(
    c, counts, headline=flops, title="break-even: predictions that cost what training did"
  )
  figures.bar_panel(
    d,
    ["training"] + [_mode_label(inf, m) for m in ("realtime", "batch")],
    [100 * u["training"], 100 * u["realtime"], 100 * u["batch"]],
    lambda v: f"{v:.2g} %",
    colors=["C3", "C0", "C2"],
    xlabel=f"% of this machine's measured peak, {si(u['peak']['peak_flops'], 'FLOP/s')} (linear)",
    title="utilization (analytic FLOPs / time)",
  )
  fig.suptitle(f"{r['experiment']} ({r['model']}, {r['params']:,} params): training vs inference")
  fig.tight_layout()
  return fig


def _vs_training(v: float, train: float) -> str:
  return f", training is {train / v:.3g}x" if v < train else f" = {v / train:.3g}x training"


def _distinct_modes(inf: dict[str, Any]) -> list[str]:
  """realtime, train_batch, batch; train_batch left out when it is the best batch too."""
  same = all(inf["train_batch"].get(k) == inf["batch"].get(k) for k in ("batch_size", "engine"))
  return ["realtime", "batch"] if same else ["realtime", "train_batch", "batch"]


def _mode_label(inf: dict[str, Any], mode: str, sep: str = "\n") -> str:
  size = inf[mode]["batch_size"]
  what = {
    "realtime": "real-time, batch 1",
    "train_batch": f"batch {size} (as trained)",
    "batch": f"best batch ({size})",
  }[mode]
  return f"{what}{sep}({engine_of(inf[mode])})"


def _p99_us(t: dict[str, Any], m: dict[str, Any]) -> float | None:
  """A mode's p99 per example: real-time's own, a jax batch's from the sweep; else unknown."""
  if m.get("p99_seconds") is not None:
    return m["p99_seconds"] * 1e6
  rows = [s for s in t.get("sweep", []) if s["batch_size"] == m["batch_size"]]
  if engine_of(m) == "jax" and rows and "call_p99_us" in rows[0]:
    return rows[0]["call_p99_us"] / m["batch_size"]
  return None
