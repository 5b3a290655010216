"""Every inference engine timed for the main job's report, one after another in one process, and
the fastest engine per scenario (`research.studies.train_vs_infer` reports them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from research.bench.latency import batch_sweep, interleaved_latency, realtime_latency
from research.serving.engines import EngineFactory, available_engines, check_engines
from research.serving.export import ExportError

if TYPE_CHECKING:
  from research.studies.train_vs_infer import CostSettings


def time_engines(
  run: Any, data: Any, sizes: Sequence[int], settings: CostSettings, log: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
  """Batch-1 latency, the batch sweep and test accuracy of every engine, one after another in
  this process; an engine that cannot serve this model is recorded with the exporter's reason."""
  names = check_engines(settings.engines or available_engines())
  if "jax" not in names:
    names = ("jax", *names)  # XLA's FLOP and memory counts describe the jax engine
  factory = EngineFactory(run, calibration_x=data.x_train)
  out: dict[str, dict[str, Any]] = {}
  ready: dict[str, Any] = {}
  for name in names:
    try:
      engine = factory.make(name, sizes)
    except ExportError as e:
      out[name] = {"available": False, "reason": str(e)}
      log(f"  {name}: not available for this model: {e}")
      continue
    ready[name] = engine
    rt = realtime_latency(engine, data.x_test[:1], n_calls=settings.latency_calls)
    rt.pop("samples_us")
    sweep = batch_sweep(engine, seconds_per_size=settings.seconds_per_size)
    best = max(sweep, key=lambda r: r["examples_per_s"])
    out[name] = {
      "available": True,
      "precision": engine.precision,
      "test_accuracy": float(np.mean(engine.predict(data.x_test) == data.y_test)),
      "model_bytes": engine.model_bytes,
      "notes": engine.notes,
      "realtime_p50_us": rt["serving"]["p50_us"],
      "realtime_p99_us": rt["serving"]["p99_us"],
      "best_batch_size": best["batch_size"],
      "best_us_per_example": best["us_per_example"],
      "us_per_example_by_batch": {r["batch_size"]: r["us_per_example"] for r in sweep},
      "_realtime": rt,
      "_sweep": sweep,
    }
    log(
      f"  {name}: batch 1 p50 {rt['serving']['p50_us']:.1f} µs, best "
      f"{best['us_per_example']:.3f} µs/example at batch {best['batch_size']}"
    )
  if len(ready) > 1:  # compare engines by calls interleaved in one pass, not minutes apart
    both = interleaved_latency(ready, data.x_test[:1], settings.latency_calls)
    for name, stats in both.items():
      out[name]["realtime_alone_p50_us"] = out[name]["realtime_p50_us"]
      out[name]["realtime_p50_us"], out[name]["realtime_p99_us"] = stats["p50_us"], stats["p99_us"]
    log(
      "  batch 1, interleaved: " + ", ".join(f"{n} {s['p50_us']:.1f} µs" for n, s in both.items())
    )
  return out


def fastest_engines(engines: dict[str, dict[str, Any]], train_batch: int) -> dict[str, Any]:
  """Per scenario, the fastest engine's time per prediction, naming it: real-time (batch-1 p50
  through the serving path), best batch, and the training batch size."""
  ready = {n: e for n, e in engines.items() if e["available"]}
  rt = min(ready, key=lambda n: ready[n]["realtime_p50_us"])
  bb = min(ready, key=lambda n: ready[n]["best_us_per_example"])
  tb = min(ready, key=lambda n: ready[n]["us_per_example_by_batch"][train_batch])
  return {
    "realtime": {
      "engine": rt,
      "seconds_per_prediction": ready[rt]["realtime_p50_us"] * 1e-6,
      "batch_size": 1,
      "p99_seconds": ready[rt]["realtime_p99_us"] * 1e-6,
    },
    "batch": {
      "engine": bb,
      "seconds_per_prediction": ready[bb]["best_us_per_example"] * 1e-6,
      "batch_size": ready[bb]["best_batch_size"],
    },
    "train_batch": {
      "engine": tb,
      "seconds_per_prediction": ready[tb]["us_per_example_by_batch"][train_batch] * 1e-6,
      "batch_size": train_batch,
    },
  }
