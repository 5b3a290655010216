"""A cost report's headline as flat numbers: the columns `compare_runs.py` tabulates across runs
and the metrics of the run's HParams trial in TensorBoard (research/dashboard.py)."""

from __future__ import annotations

from typing import Any


def comparison_fields(r: dict[str, Any]) -> dict[str, float]:
  """The report's headline as flat columns for a table of runs (`scripts/compare_runs.py`)."""
  inf = r["time"]["inference"]
  return {
    "forward_flops_per_example": r["flops"]["forward_per_example"],
    "train_to_forward_flops": r["flops"]["train_to_forward_ratio"],
    "train_us_per_example": 1e6 * r["time"]["train_seconds_per_example"],
    "realtime_us_per_prediction": 1e6 * inf["realtime"]["seconds_per_prediction"],
    "batch_us_per_prediction": 1e6 * inf["batch"]["seconds_per_prediction"],
    "break_even_flops": r["break_even_predictions"]["flops"],
    "break_even_realtime": r["break_even_predictions"]["seconds_realtime"],
    "break_even_batch": r["break_even_predictions"]["seconds_batch"],
    "training_utilization": r["utilization"]["training"],
    "batch_utilization": r["utilization"]["batch"],
  }


# comparison field -> TensorBoard trial metric (research/dashboard.py). The dashboard ticks the
# first five by tag: the two break-evens, the two latencies, then test accuracy from training.
# The batch break-even stays in the report's text: as a metric it would push test accuracy out.
TRIAL_METRICS = {
  "break_even_flops": "trial/break_even_flops",
  "break_even_realtime": "trial/break_even_realtime",
  "realtime_us_per_prediction": "trial/latency_realtime_us",
  "batch_us_per_prediction": "trial/latency_batch_us",
  "train_to_forward_flops": "trial/train_to_forward_flops",
  "train_us_per_example": "trial/train_us_per_example",
  "training_utilization": "trial/utilization_training",
  "batch_utilization": "trial/utilization_batch",
}


def trial_metrics(r: dict[str, Any]) -> dict[str, float]:
  """The report's headline as the run's HParams metrics."""
  fields = comparison_fields(r)
  return {tag: fields[name] for name, tag in TRIAL_METRICS.items()}
