"""The main job: train (or resume) a run, then put its training and its inference side by side.

Everything in the report comes from one process on one machine: the run's own training time,
inference timed here on every engine through the same harness as `scripts/bench_inference.py`
(each break-even uses the fastest engine for its scenario, and names it), FLOPs counted
analytically and by XLA, memory from the compiled executables, and this machine's peak FLOP/s
measured with a large matmul.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from research import dashboard
from research import workdir as workdir_lib
from research.bench.latency import (
  batch_sweep,
  interleaved_latency,
  realtime_latency,
  saturation_batch_size,
)
from research.cost import CostError, flops, hardware, xla
from research.data import load_dataset
from research.models import count_params, tree_bytes
from research.outputs import check_output_dir, write_json, write_text
from research.provenance import provenance
from research.serving.engines import EngineFactory, available_engines, check_engines
from research.serving.export import ExportError
from research.serving.restore import load_run
from research.serving.run_kind import run_kind
from research.studies import StudyError
from research.studies.cost_report import markdown_report, plot_report
from research.studies.report_fields import trial_metrics
from research.training.loop import train_and_evaluate
from research.training.optimizers import optimizer_from_config
from research.training.step import create_train_state, make_train_step


@dataclasses.dataclass
class CostSettings:
  max_batch: int = 4096
  latency_calls: int = 2000
  seconds_per_size: float = 0.2
  profiles: tuple[str, ...] = tuple(hardware.PROFILES)
  power_watts: float = 15.0  # this machine, per busy core: an assumption, override it
  price_per_hour: float = 0.05  # this machine: an assumption, override it
  peak_matmul_n: int = 1024
  engines: tuple[str, ...] | None = None  # None: every installed engine; the fastest is reported


def check_settings(settings: CostSettings) -> None:
  """Raises CostError (or InferenceError for an engine) naming the first setting that cannot be
  used: every count and size positive, power positive, price not negative, names known."""
  for name in ("max_batch", "latency_calls", "seconds_per_size", "power_watts", "peak_matmul_n"):
    if not getattr(settings, name) > 0:
      raise CostError(f"{name.replace('_', '-')} must be positive, got {getattr(settings, name)}")
  if not settings.price_per_hour >= 0:
    raise CostError(f"price-per-hour must be >= 0, got {settings.price_per_hour}")
  for name in settings.profiles:
    hardware.get_profile(name)
  if settings.engines is not None:
    check_engines(settings.engines)


def train_step_for(optimizer: Any) -> xla.TrainStepFor:
  """The train step training runs, for XLA to count (research.cost imports no training)."""

  def build(model: Any, x: Any) -> tuple[Any, Any]:
    state = create_train_state(model, optimizer, x[:1], jax.random.key(0))
    return make_train_step(model, optimizer), state

  return build


def run_job(
  config: ml_collections.ConfigDict,
  workdir: str,
  settings: CostSettings,
  progress: bool = True,
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """Train (or resume), restore params, time inference, count costs; returns the report."""
  for name in settings.profiles:
    hardware.get_profile(name)  # unknown names fail before any work
  log(f"training {config.experiment} in {workdir}")
  summary = train_and_evaluate(config, workdir, progress=progress)
  run = load_run(workdir, "latest")
  data = load_dataset(config.data)
  batch = config.batch_size
  optimizer = optimizer_from_config(config)
  num_params = count_params(run.params)

  log("timing inference on every engine: batch 1, then a batch sweep")
  sizes = tuple(sorted({2**i for i in range(settings.max_batch.bit_length())} | {batch}))
  engines = time_engines(run, data, sizes, settings, log)
  rt, sweep = engines["jax"].pop("_realtime"), engines["jax"].pop("_sweep")
  for e in engines.values():  # the other engines' raw timings stay out of the report
    e.pop("_realtime", None)
    e.pop("_sweep", None)
  best = max(sweep, key=lambda r: r["examples_per_s"])  # the jax apply's (XLA's counts below)

  log("counting FLOPs and memory")
  layers = flops.layer_flops(config.model, run.input_shape, run.num_classes)
  fwd_ex = flops.forward_flops(config.model, run.input_shape, run.num_classes, 1)
  step_flops = flops.train_step_flops(
    config.model, run.input_shape, run.num_classes, batch, num_params, config.optimizer.name
  )
  x_b = np.zeros((batch, *run.input_shape), np.float32)
  xla_count = xla.xla_flops(
    config.model, run.num_classes, (x_b, np.zeros(batch, np.int32)), train_step_for(optimizer)
  )
  state = create_train_state(
    run.model, optimizer, np.zeros((1, *run.input_shape), np.float32), jax.random.key(0)
  )
  train_compiled = xla.compiled_cost(
    make_train_step(run.model, optimizer), state, (x_b, np.zeros(batch, np.int32)), donate_argnums=0
  )
  apply_same = xla.compiled_cost(run.model.apply, run.params, x_b)
  apply_best = xla.compiled_cost(
    run.model.apply, run.params, np.zeros((best["batch_size"], *run.input_shape), np.float32)
  )
  apply_one = xla.compiled_cost(
    run.model.apply, run.params, np.zeros((1, *run.input_shape), np.float32)
  )

  log(f"measuring this machine's peak FLOP/s ({settings.peak_matmul_n}^3 matmul)")
  peak = hardware.measure_peak_flops(settings.peak_matmul_n)

  train_seconds = summary["train_seconds"]
  steps = summary["steps"]
  train_s_per_example = train_seconds / (steps * batch)
  infer = fastest_engines(engines, batch)
  train_total_flops = step_flops * steps
  here = hardware.this_machine_profile(
    peak["peak_flops"], settings.power_watts, settings.price_per_hour
  )

  def utilization(flops: float, seconds: float) -> float:
    return flops / seconds / peak["peak_flops"]

  break_even = {
    "flops": hardware.break_even(train_total_flops, fwd_ex),
    **{
      f"seconds_{mode}": hardware.break_even(train_seconds, v["seconds_per_prediction"])
      for mode, v in infer.items()
    },
  }
  profiles = {}
  for name in settings.profiles:
    p = hardware.get_profile(name)
    train_s = train_total_flops / (p.peak_flops * p.mfu_train)
    per_pred = {
      "realtime": fwd_ex / (p.peak_flops * p.mfu_realtime),
      "batch": fwd_ex / (p.peak_flops * p.mfu_batch),
    }
    profiles[name] = {
      **dataclasses.asdict(p),
      "train_seconds": train_s,
      "train": hardware.energy_and_money(train_s, p),
      "dollars_per_million_predictions": {
        m: 1e6 * hardware.energy_and_money(s, p)["dollars"] for m, s in per_pred.items()
      },
      "break_even_predictions": {m: hardware.break_even(train_s, s) for m, s in per_pred.items()},
    }
  here_costs = {
    "train": hardware.energy_and_money(train_seconds, here),
    "dollars_per_million_predictions": {
      m: 1e6 * hardware.energy_and_money(v["seconds_per_prediction"], here)["dollars"]
      for m, v in infer.items()
    },
    "joules_per_prediction": {
      m: v["seconds_per_prediction"] * here.power_watts for m, v in infer.items()
    },
  }
  memory = {
    "params_bytes": tree_bytes(run.params),
    "optimizer_state_bytes": tree_bytes(state.opt_state),
    "train_step": {
      k: train_compiled.get(k)
      for k in ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "peak_bytes")
    },
    "apply_same_batch": {
      k: apply_same.get(k) for k in ("argument_bytes", "output_bytes", "temp_bytes", "peak_bytes")
    },
    "apply_batch_1": {
      k: apply_one.get(k) for k in ("argument_bytes", "output_bytes", "temp_bytes", "peak_bytes")
    },
  }
  return {
    "experiment": config.experiment,
    "model": config.model.name,
    "params": num_params,
    "workdir": os.path.abspath(workdir),
    "step": run.step,
    "batch_size": batch,
    "steps": steps,
    "final_test_accuracy": summary["final_test_accuracy"],
    "flops": {
      "analytic_layers": [
        dict(dataclasses.asdict(l), forward=l.forward, backward=l.backward) for l in layers
      ],
      "forward_per_example": fwd_ex,
      "train_step": step_flops,
      "train_step_per_example": step_flops / batch,
      "train_to_forward_ratio": step_flops / (batch * fwd_ex),
      "training_run_total": train_total_flops,
      "xla": {
        **xla_count,
        "forward_per_example": xla_count["forward"] / batch,
        "train_to_forward_ratio": xla_count["train_step"] / xla_count["forward"],
      },
      "xla_over_analytic": {
        "forward": xla_count["forward"] / (batch * fwd_ex),
        "train_step": xla_count["train_step"] / step_flops,
      },
      "compiled_bytes_accessed": {
        "train_step": train_compiled.get("bytes_accessed"),
        "apply_same_batch": apply_same.get("bytes_accessed"),
        "apply_best_batch": apply_best.get("bytes_accessed"),
      },
    },
    "time": {
      "train_seconds": train_seconds,
      "compile_seconds": summary["compile_seconds"],
      "train_seconds_per_example": train_s_per_example,
      "inference": infer,
      "train_over_realtime_per_example": train_s_per_example
      / infer["realtime"]["seconds_per_prediction"],
      "train_over_batch_per_example": train_s_per_example
      / infer["batch"]["seconds_per_prediction"],
      "train_over_same_batch_inference": train_s_per_example
      / infer["train_batch"]["seconds_per_prediction"],
      "realtime": {k: rt[k] for k in ("serving", "floor", "compute")},
      "sweep": sweep,
      "saturation_batch_size": saturation_batch_size(sweep),
      "engines": engines,
    },
    "utilization": {
      "peak": peak,
      "training": utilization(train_total_flops, train_seconds),
      "realtime": utilization(fwd_ex, infer["realtime"]["seconds_per_prediction"]),
      "batch": utilization(fwd_ex, infer["batch"]["seconds_per_prediction"]),
    },
    "memory": memory,
    "break_even_predictions": break_even,
    "this_machine": {**dataclasses.asdict(here), **here_costs},
    "profiles": profiles,
  }


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


def train_vs_infer(
  config: ml_collections.ConfigDict,
  workdir: str,
  settings: CostSettings,
  argv: Sequence[str],
  out: str | None = None,
  progress: bool = True,
  log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], str]:
  """The main job, end to end: `run_job`, then report.{json,md,png} into the workdir (and `out`),
  and the report (text, figure, headline figures as trial metrics) into the run's TensorBoard
  summary (research/dashboard.py).

  Returns the report and the path of the markdown written last.
  """
  check_settings(settings)  # before any work: a bad number or name costs no training
  if run_kind(config) == "language_model":
    raise StudyError(
      f"{config.experiment or 'this config'} is a language model; train_vs_infer.py reports "
      f"classifiers: train it with scripts/train.py and report it with scripts/lm_costs.py"
    )
  if out:
    check_output_dir(out, "--out")
  t = time.perf_counter()
  report = run_job(config, workdir, settings, progress=progress, log=log)
  meta = provenance(argv, wall_seconds=time.perf_counter() - t)
  report["provenance"] = meta
  text = markdown_report(report, meta["markdown"]) + "\n"
  md_path = ""
  for directory in dict.fromkeys([workdir, out or workdir]):  # the workdir always keeps a copy
    os.makedirs(directory, exist_ok=True)
    write_json(workdir_lib.path(directory, workdir_lib.REPORT), report)
    md_path = workdir_lib.path(directory, workdir_lib.REPORT_MARKDOWN)
    write_text(md_path, text)
    plot_report(report, workdir_lib.path(directory, workdir_lib.REPORT_FIGURE))
  dashboard.publish_report(
    workdir,
    report["step"],
    "report",
    text,
    [workdir_lib.path(workdir, workdir_lib.REPORT_FIGURE)],
    trial_metrics(report),
  )
  return report, md_path
