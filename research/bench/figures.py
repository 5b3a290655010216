"""Figures of timings and costs, drawn for a paper: PNG (150 dpi), SVG and PDF beside it (same
stem), atomic, with no timestamps inside, so re-drawing the same data gives the same files.

Linear axes unless the label names a log scale; values written on bars; spread drawn wherever
timings repeat (dot p50, bar p50 to p90, whisker fastest call to p99); one panel per idea; every
line named in a legend; text stays text in SVG and PDF, so a paper's tooling can restyle it.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any, Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from research.bench.latency import saturation_batch_size  # noqa: E402
from research.outputs import write_all, write_bytes  # noqa: E402

FORMATS = ("png", "svg", "pdf")
PNG_DPI = 150
LATENCY_SAMPLES = "latency_samples.json"
SIDE_NAMES = {"serving": "serving path (logits)", "floor": "bare call", "compute": "compute alone"}
_METADATA = {
  "png": {"Software": None},
  "svg": {"Date": None, "Creator": None},
  "pdf": {"CreationDate": None, "Creator": None, "Producer": None},
}
_BELOW = {"loc": "upper center", "fontsize": 8, "frameon": False}
_STAR = {"marker": "*", "markersize": 13, "markeredgecolor": "k", "ls": "", "zorder": 4}
_BOXED = {"boxstyle": "round,pad=0.15", "fc": "w", "ec": "none", "alpha": 0.85}
matplotlib.rcParams.update(
  {"svg.fonttype": "none", "svg.hashsalt": "research", "pdf.fonttype": 42, "font.size": 9}
)


def figure_paths(png_path: str) -> list[str]:
  """The PNG path and its SVG and PDF siblings (same stem)."""
  stem = os.path.splitext(png_path)[0]
  return [f"{stem}.{ext}" for ext in FORMATS]


def save_figure(fig, png_path: str) -> list[str]:
  """Writes `fig` as PNG, SVG and PDF beside each other (all three or none) and closes it;
  returns the paths."""
  files = figure_files(fig, png_path)
  write_all(files)
  return list(files)


def figure_files(fig, png_path: str) -> dict[str, bytes]:
  """`fig` rendered as PNG, SVG and PDF: path -> bytes, for `write_all` with other files."""
  fit_bar_labels(fig)
  files = {path: _render(fig, fmt) for path, fmt in zip(figure_paths(png_path), FORMATS)}
  plt.close(fig)
  return files


def png_bytes(fig) -> bytes:
  """The figure as PNG bytes (for a TensorBoard image); closes it."""
  fit_bar_labels(fig)
  data = _render(fig, "png")
  plt.close(fig)
  return data


def _render(fig, fmt: str) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format=fmt, dpi=PNG_DPI, bbox_inches="tight", metadata=_METADATA[fmt])
  return buf.getvalue()


def fit_bar_labels(fig) -> None:
  """Widens each bar panel's x axis just enough that its value labels end inside it, once the
  figure's layout is final (text widths are known only then)."""
  if not any(getattr(ax, "_bar_labels", None) for ax in fig.axes):
    return
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  for ax in fig.axes:
    if not (labels := getattr(ax, "_bar_labels", None)):
      continue
    width = ax.get_window_extent(renderer).width
    need = [
      end / max(0.2, 1 - (t.get_window_extent(renderer).width + 12) / width) for end, t in labels
    ]
    ax.set_xlim(0, max(need))


def bar_panel(
  ax,
  labels: Sequence[str],
  values: Sequence[float],
  fmt: Callable[[float], str],
  *,
  whiskers: Sequence[float | None] | None = None,
  notes: Sequence[str] | None = None,
  colors: Sequence[str] | None = None,
  xlabel: str = "",
  title: str = "",
  tick_fmt: Callable[[float], str] | None = None,
) -> None:
  """Horizontal bars from zero on a linear axis, each value written beside it: bar lengths
  compare honestly. A whisker runs from a bar's end to a spread bound (a p99) where one is known."""
  y = np.arange(len(labels))
  ax.barh(y, values, height=0.6, color=colors, zorder=2)
  ends = list(values)
  spread = [""] * len(values)
  for i, w in enumerate(whiskers or []):
    if w is not None:
      ax.errorbar(values[i], i, xerr=[[0], [w - values[i]]], color="0.2", capsize=4, zorder=3)
      ends[i], spread[i] = max(ends[i], w), f" (p99 {fmt(w)})"
  ax._bar_labels = []
  for i, v in enumerate(values):
    text = fmt(v) + spread[i] + (notes[i] if notes and notes[i] else "")
    t = ax.annotate(text, (ends[i], i), xytext=(4, 0), textcoords="offset points", va="center")
    ax._bar_labels.append((ends[i], t))
  ax.set_yticks(y, labels)
  ax.invert_yaxis()
  ax.set_xlim(0, max(ends) * 1.55)
  if tick_fmt is not None:
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: tick_fmt(v)))
  _style(ax, xlabel, title, grid="x")


def break_even_panel(
  ax,
  counts: Mapping[str, tuple[float, str, str]],
  *,
  headline: str | None = None,
  title: str = "",
  unit: str = "predictions",
) -> None:
  """Cumulative inference cost as a multiple of the training run's against `unit` served,
  one line per measure (label -> (break-even count, color, gid)): each crosses 1 at its
  break-even, marked with a dot, a drop line and its count in the legend. The `headline` line is
  dashed, drawn on top with a diamond and its count written beside it. Log-log axes."""
  ns = [n for n, _, _ in counts.values()]
  x = np.geomspace(min(ns) / 30, max(ns) * 30, 200)
  floor = 1 / 30
  ax.axhline(1, color="k", linewidth=1.2, label="= cost of the training run", zorder=2)
  for label, (n, color, gid) in counts.items():
    top = label == headline
    style = {"ls": "--", "linewidth": 2, "zorder": 3.5} if top else {"zorder": 3}
    ax.plot(x, x / n, color=color, label=f"{label}: {si(n)} {unit}", **style)
    ax.plot([n, n], [floor, 1], ls=":", color=color, zorder=2)
    mark = {"marker": "D" if top else "o", "markersize": 8 if top else 7}
    ax.plot([n], [1], color=color, markeredgecolor="k", gid=gid, zorder=5 if top else 4, **mark)
    if top:
      at = {"xytext": (-7, 7), "textcoords": "offset points", "ha": "right", "va": "bottom"}
      ax.annotate(si(n), (n, 1), **at, color=color, fontweight="bold", bbox=_BOXED, zorder=6)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlim(x[0], x[-1])
  ax.set_ylim(floor, 30)
  ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
  ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: si(v)))
  _style(ax, f"{unit} served (log scale)", title, grid="both")
  ax.set_ylabel("inference cost ÷ training cost (log scale)")
  ax.legend(bbox_to_anchor=(0.5, -0.16), **_BELOW)


def interval_panel(
  ax, stats: Mapping[str, Mapping[str, float]], *, xlabel: str = "", title: str = ""
) -> None:
  """One row per label: dot at p50, bar p50 to p90, whisker from the fastest call to p99.
  Linear from zero unless the rows span more than 10x, then log (and the label says so)."""
  if not stats:
    return _empty(ax, title)
  lo = min(s["min_us"] for s in stats.values())
  hi = max(s["p99_us"] for s in stats.values())
  log = hi / max(lo, 1e-9) > 10
  for i, s in enumerate(stats.values()):
    color = f"C{i % 10}"
    ax.plot([s["min_us"], s["p99_us"]], [i, i], color=color, linewidth=1.2, zorder=2)
    ax.plot([s["p50_us"], s["p90_us"]], [i, i], color=color, linewidth=7, alpha=0.45, zorder=2)
    ax.plot([s["p50_us"]], [i], "o", color=color, markeredgecolor="k", zorder=3)
    text = f"p50 {_num(s['p50_us'])} · p99 {_num(s['p99_us'])} µs"
    ax.annotate(text, (s["p99_us"], i), xytext=(5, 0), textcoords="offset points", va="center")
  ax.set_yticks(np.arange(len(stats)), list(stats))
  ax.invert_yaxis()
  if log:
    ax.set_xscale("log")
    ax.set_xlim(lo / 1.5, hi * 12)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _num(v)))
  else:
    ax.set_xlim(0, hi * 1.7)
  scale = "log scale" if log else "linear"
  _style(ax, f"{xlabel} ({scale})", title, grid="x")
  ax.legend(handles=_interval_legend(), loc="lower right", fontsize=7)


def cdf_panel(ax, samples_us: Mapping[str, np.ndarray], *, title: str = "") -> None:
  """Empirical CDFs of per-call latency, p50 (dot) and p99 (cross) marked on each curve; the
  x axis is linear and stops just past the largest p99 (the rarest outliers are cut, and said)."""
  if not samples_us:
    return _empty(ax, title)
  top, slowest = 0.0, 0.0
  for i, (label, s) in enumerate(samples_us.items()):
    s = np.sort(np.asarray(s, dtype=np.float64))
    p50, p99 = np.percentile(s, [50, 99])
    color = f"C{i % 10}"
    label = f"{label}: p50 {_num(p50)}, p99 {_num(p99)} µs"
    ax.plot(s, np.arange(1, len(s) + 1) / len(s), color=color, label=label, zorder=2)
    ax.plot([p50], [0.5], ls="", marker="o", color=color, markeredgecolor="k", zorder=3)
    ax.plot([p99], [0.99], ls="", marker="x", color=color, markersize=8, mew=2, zorder=4)
    top, slowest = max(top, p99), max(slowest, s[-1])
  ax.set_xlim(0, top * 1.15)
  ax.set_ylim(0, 1.02)
  marks = [
    Line2D([], [], ls="", marker="o", color="0.5", markeredgecolor="k", label="p50 (y = 0.5)"),
    Line2D([], [], ls="", marker="x", color="0.3", mew=2, label="p99 (y = 0.99)"),
  ]
  handles = ax.get_legend_handles_labels()[0] + marks
  ax.legend(handles=handles, loc="lower right", fontsize=7)
  xlabel = f"latency per call (µs, linear; cut at 1.15 × p99, slowest call {_num(slowest)} µs)"
  _style(ax, xlabel, title, grid="both")
  ax.set_ylabel("fraction of calls at most this fast")


def plot_latency_distribution(
  samples_us: Mapping[str, Any],
  path: str,
  title: str = "",
  interleaved: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
  """Batch-1 latency: engines side by side, and where one engine's call goes.

  `samples_us` maps engine tag -> {side: samples} (as `benchmark_run` returns; sides are
  serving, floor, compute) or label -> samples. `interleaved` (tag -> stats) draws the engine
  panel from calls interleaved in one pass, the fair comparison. Returns the PNG path; SVG and
  PDF lie beside it.
  """
  nested = all(isinstance(v, Mapping) for v in samples_us.values())
  groups = samples_us if nested and samples_us else {"": samples_us}
  ref = next(
    (t for t in groups if t.startswith("jax") and t.endswith("float32")), next(iter(groups))
  )
  if interleaved:
    engines, how = dict(interleaved), "calls interleaved in one pass"
  elif nested:
    engines = {t: latency_stats(s["serving"]) for t, s in groups.items() if "serving" in s}
    how = "each engine timed alone"
  else:
    engines, how = {k: latency_stats(v) for k, v in samples_us.items()}, "each timed alone"
  rows = len(engines)
  fig, (left, right) = plt.subplots(
    1, 2, figsize=(13, max(3.8, 1.2 + 0.5 * rows)), gridspec_kw={"width_ratios": [1.1, 1]}
  )
  interval_panel(
    left, engines, xlabel="batch-1 latency per call, µs", title=f"batch-1 serving latency ({how})"
  )
  sides = {SIDE_NAMES.get(k, k): v for k, v in groups[ref].items()}
  what = f"{ref}, batch 1: serving path vs bare call vs compute" if ref else "distribution"
  cdf_panel(right, sides, title=what)
  fig.suptitle(title or "batch-1 latency")
  fig.tight_layout()
  return save_figure(fig, path)[0]


def plot_batch_sweep(
  records_by_label: Mapping[str, Sequence[dict[str, Any]]],
  path: str,
  title: str = "",
  saturation_fraction: float = 0.9,
) -> str:
  """Throughput against batch size with the saturation batch starred, and what a caller waits
  per call at each batch: the two sides of choosing a batch size. Returns the PNG path."""
  fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.6))
  for i, (label, records) in enumerate(records_by_label.items()):
    rec = sorted(records, key=lambda r: r["batch_size"])
    b = np.array([r["batch_size"] for r in rec], dtype=np.float64)
    thr = np.array([r["examples_per_s"] for r in rec]) / 1e3
    p50 = np.array([r.get("call_p50_us", r["us_per_example"] * r["batch_size"]) for r in rec])
    p99 = np.array([r.get("call_p99_us", np.nan) for r in rec])
    sat = saturation_batch_size(rec, saturation_fraction)
    color = f"C{i % 10}"
    left.plot(b, thr, marker="o", markersize=3, color=color, label=f"{label} (saturates at {sat})")
    right.plot(b, p50, marker="o", markersize=3, color=color)
    if not np.isnan(p99).all():
      left.fill_between(b, b / p99 * 1e3, thr, color=color, alpha=0.1, linewidth=0)
      right.fill_between(b, p50, p99, color=color, alpha=0.1, linewidth=0)
    j = int(np.flatnonzero(b == sat)[0])
    left.plot([sat], [thr[j]], **_STAR, color=color, gid=f"saturation_{i}")
    right.plot([sat], [p50[j]], **_STAR, color=color)
  for ax in (left, right):
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
  left.set_ylim(bottom=0)
  right.set_yscale("log")
  pct = f"{100 * saturation_fraction:g} %"
  _style(left, "batch size (log₂ scale)", "throughput (line: at p50 call time)", grid="both")
  left.set_ylabel("thousand examples / s (linear)")
  _style(right, "batch size (log₂ scale)", "time a caller waits per call", grid="both")
  right.set_ylabel("µs per call (log scale)")
  extra = [
    plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.25, label="band: p50 to p99 call time"),
    Line2D([], [], **_STAR, color="w", label=f"saturation: smallest batch ≥ {pct} of best"),
  ]
  handles = left.get_legend_handles_labels()[0] + extra
  fig.suptitle(title or "batch inference")
  fig.tight_layout()
  fig.legend(handles=handles, bbox_to_anchor=(0.5, 0.0), ncol=min(3, len(handles)), **_BELOW)
  return save_figure(fig, path)[0]


def latency_stats(samples_us: Sequence[float]) -> dict[str, float]:
  """min, p50, p90, p99 of per-call latencies (µs), as the interval panel draws them."""
  s = np.asarray(samples_us, dtype=np.float64)
  p50, p90, p99 = np.percentile(s, [50, 90, 99])
  return {"min_us": float(s.min()), "p50_us": p50, "p90_us": p90, "p99_us": p99}


def batch_sweeps(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
  """A benchmark's sweep records grouped by engine tag (`engine backend precision`)."""
  out: dict[str, list[dict[str, Any]]] = {}
  for r in records:
    if r["kind"] == "batch":
      out.setdefault(_tag(r), []).append(r)
  return out


def write_benchmark_figures(
  result: Mapping[str, Any], samples: Mapping[str, Any] | None, out: str, experiment: str
) -> list[str]:
  """latency.* and batch_sweep.* into `out` from a benchmark's records and its batch-1 samples
  (saved beside as latency_samples.json when given, so the figure can be re-drawn)."""
  records = result["records"]
  written = []
  if samples is not None:  # drawn from the samples as saved, so a re-draw gives the same files
    written.append(write_latency_samples(samples, os.path.join(out, LATENCY_SAMPLES)))
    samples = read_latency_samples(written[-1])
    interleaved = {_tag(r): r["serving"] for r in records if r["kind"] == "realtime_interleaved"}
    png = plot_latency_distribution(
      samples,
      os.path.join(out, "latency.png"),
      f"{experiment}: batch-1 latency",
      interleaved=interleaved or None,
    )
    written += figure_paths(png)
  fraction = (result.get("settings") or {}).get("saturation_fraction", 0.9)
  sweep_png, title = os.path.join(out, "batch_sweep.png"), f"{experiment}: batch inference"
  png = plot_batch_sweep(batch_sweeps(records), sweep_png, title, fraction)
  return written + figure_paths(png)


def write_latency_samples(samples: Mapping[str, Mapping[str, Any]], path: str) -> str:
  """tag -> side -> per-call µs, in call order, rounded to 0.1 µs (compact JSON)."""
  data = {
    tag: {side: np.round(np.asarray(v, dtype=np.float64), 1).tolist() for side, v in sides.items()}
    for tag, sides in samples.items()
  }
  return write_bytes(path, (json.dumps(data, separators=(",", ":")) + "\n").encode())


def read_latency_samples(path: str) -> dict[str, dict[str, np.ndarray]]:
  with open(path) as f:
    data = json.load(f)
  return {tag: {side: np.asarray(v) for side, v in sides.items()} for tag, sides in data.items()}


def si(x: float, unit: str = "") -> str:
  """3 significant digits with an SI prefix: 1.76 M, 61.4 kFLOP."""
  for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(x) >= factor:
      return f"{x / factor:.3g} {prefix}{unit}"
  return f"{x:.3g} {unit}".strip()


def _num(x: float) -> str:
  """3 significant digits, never an exponent: 31.1, 717, 1,637."""
  return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def _tag(r: Mapping[str, Any]) -> str:
  return f"{r['engine']} {r['backend']} {r['precision']}"


def _interval_legend() -> list:
  return [
    Line2D([], [], ls="", marker="o", color="0.5", markeredgecolor="k", label="p50"),
    Line2D([], [], color="0.5", linewidth=7, alpha=0.45, label="p50 to p90"),
    Line2D([], [], color="0.5", linewidth=1.2, label="fastest to p99"),
  ]


def _empty(ax, title: str) -> None:
  ax.text(0.5, 0.5, "nothing measured", ha="center", va="center", transform=ax.transAxes)
  _style(ax, "", title)


def _style(ax, xlabel: str, title: str, grid: str = "both") -> None:
  ax.set_xlabel(xlabel)
  ax.set_title(title, loc="left", fontsize=10)
  ax.grid(alpha=0.3, axis=grid, which="major")
  ax.set_axisbelow(True)
  for side in ("top", "right"):
    ax.spines[side].set_visible(False)
