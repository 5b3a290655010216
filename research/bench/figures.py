"""PNG figures of inference timings (matplotlib, no display), written atomically."""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from research.provenance import write_bytes  # noqa: E402


def png_bytes(fig) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  return buf.getvalue()


def plot_latency_distribution(
  samples_us: Mapping[str, np.ndarray], path: str, title: str = ""
) -> str:
  """Empirical CDFs of per-call latency, p50 and p99 marked: the tail is the point."""
  fig, ax = plt.subplots(figsize=(7, 4))
  for label, s in samples_us.items():
    s = np.sort(np.asarray(s))
    (line,) = ax.plot(s, np.arange(1, len(s) + 1) / len(s), label=label)
    for q, style in ((50, ":"), (99, "--")):
      ax.axvline(np.percentile(s, q), color=line.get_color(), linestyle=style, linewidth=0.8)
  ax.set_xscale("log")
  ax.set_xlabel("latency per call (µs, log); dotted p50, dashed p99")
  ax.set_ylabel("fraction of calls")
  ax.set_title(title or "batch-1 latency")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=8)
  return write_bytes(path, png_bytes(fig))


def plot_batch_sweep(
  records_by_label: Mapping[str, Sequence[dict[str, Any]]], path: str, title: str = ""
) -> str:
  """Throughput and per-example time against batch size, one line per label."""
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  for label, records in records_by_label.items():
    b = [r["batch_size"] for r in records]
    left.plot(b, [r["examples_per_s"] for r in records], marker="o", markersize=3, label=label)
    right.plot(b, [r["us_per_example"] for r in records], marker="o", markersize=3, label=label)
  for ax, ylabel in ((left, "examples / s"), (right, "µs per example")):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
  left.legend(fontsize=8)
  fig.suptitle(title or "batch inference")
  return write_bytes(path, png_bytes(fig))
