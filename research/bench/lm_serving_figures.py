"""Figures of a language model served under load (scripts/serve_lm.py): token-latency CDFs, and
throughput and p99 token latencies against offered load, static against continuous batching, with
the bounds drawn. Same conventions as research/bench/figures.py (PNG, SVG and PDF, atomic)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator

from research.bench.figures import _style, plt, save_figure

_MODE_COLORS = {"continuous": "C0", "static": "C3", "single stream": "C2"}


def _plain_log(ax, axes: str = "xy") -> None:
  """Log axes labelled 0.5, 1, 2, 5, 10, 20 ... instead of powers of ten."""
  plain = FuncFormatter(lambda v, _: f"{v:g}")
  for name in axes:
    axis = ax.xaxis if name == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _color(label: str) -> str:
  return next((c for k, c in _MODE_COLORS.items() if label.startswith(k)), "C7")


def plot_token_cdfs(
  per_sample_ms: Mapping[str, Mapping[str, Sequence[float]]],
  ttft_bound_ms: float,
  tpot_bound_ms: float,
  path: str,
  title: str = "",
) -> str:
  """Empirical CDFs of TTFT (left) and TPOT (right) per run (label -> {'ttft', 'tpot'} in ms),
  p99 crossed on each curve, the bound a dashed line. Log x: the runs span decades."""
  fig, axes = plt.subplots(1, 2, figsize=(13, 4.4))
  for ax, key, bound, name in (
    (axes[0], "ttft", ttft_bound_ms, "time to first token"),
    (axes[1], "tpot", tpot_bound_ms, "time per output token, (latency − TTFT) / (tokens − 1)"),
  ):
    for label, samples in per_sample_ms.items():
      s = np.sort(np.asarray(samples.get(key, ()), np.float64))
      s = s[s > 0]
      if not s.size:
        continue
      p99 = float(np.percentile(s, 99))
      color = _color(label)
      ax.step(s, np.arange(1, s.size + 1) / s.size, where="post", color=color,
              label=f"{label}: p99 {p99:.3g} ms (n={s.size})")  # fmt: skip
      ax.plot([p99], [0.99], ls="", marker="x", color=color, markersize=8, mew=2)
    ax.axvline(bound, color="k", ls="--", lw=1, label=f"p99 bound {bound:.3g} ms")
    ax.set_xscale("log")
    _plain_log(ax, "x")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right", fontsize=7)
    _style(ax, f"{key.upper()} (ms, log scale)", name)
    ax.set_ylabel("fraction of requests at most this long")
  fig.suptitle(title or "token latencies")
  fig.tight_layout()
  return save_figure(fig, path)[0]


def plot_load(
  searches: Mapping[str, Mapping[str, Any]],
  ttft_bound_ms: float,
  tpot_bound_ms: float,
  path: str,
  title: str = "",
) -> str:
  """Per batching mode, each Server trial of the QPS search against its offered load: completed
  tokens/s, p99 TTFT and p99 TPOT (LoadGen's), VALID runs filled, INVALID hollow, the bounds
  dashed, and each mode's highest VALID QPS a vertical line."""
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
  panels = (
    ("tokens_per_s", "completed tokens / s (log)", None),
    ("ttft_p99_ms", "p99 TTFT (ms, log)", ttft_bound_ms),
    ("tpot_p99_ms", "p99 TPOT (ms, log)", tpot_bound_ms),
  )
  for mode, search in searches.items():
    trials = sorted(search.get("trials", ()), key=lambda t: t["target_qps"])
    if not trials:
      continue
    color = _color(mode)
    qps = np.array([t["target_qps"] for t in trials], np.float64)
    valid = np.array([bool(t["valid"]) for t in trials])
    for ax, (key, _, _) in zip(axes, panels):
      y = np.array([_value(t, key) for t in trials], np.float64)
      ax.plot(qps, y, color=color, lw=1, alpha=0.6)
      ax.plot(qps[valid], y[valid], ls="", marker="o", color=color, label=f"{mode}: VALID")
      ax.plot(qps[~valid], y[~valid], ls="", marker="o", mfc="none", color=color,
              label=f"{mode}: INVALID")  # fmt: skip
      if search.get("qps"):
        ax.axvline(search["qps"], color=color, ls=":", lw=1)
  for ax, (_, ylabel, bound) in zip(axes, panels):
    if bound is not None:
      ax.axhline(bound, color="k", ls="--", lw=1, label=f"bound {bound:.3g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log(ax)
    _style(ax, "offered load: Poisson target QPS (log)", ylabel)
    ax.legend(loc="best", fontsize=7)
  fig.suptitle(title or "Server scenario: static against continuous batching")
  fig.tight_layout()
  return save_figure(fig, path)[0]


def _value(trial: Mapping[str, Any], key: str) -> float:
  value = trial.get(key)
  if value is None:
    value = (trial.get("loadgen") or {}).get(key)
  return np.nan if value is None else float(value)
