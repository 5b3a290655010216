"""The inference benchmark of one trained run, on every engine, backend and precision.

Engines (research.serving.engines): the jitted `apply` (`jax`) on each backend (CPU always, GPU
when present) and precision (fp32, bf16, int8 weight-only), and the ONNX export in ONNX Runtime,
fp32 and ONNX Runtime's own int8. For each, through one harness: test accuracy (and agreement
with the jax fp32 logits), batch-1 latency through the serving path beside the bare call and
compute alone, and a batch-size sweep. For each engine's own precision (jax: fp32), MLPerf
LoadGen's four scenarios, with Server searched twice at the same p99 bound: batching what is
waiting, and answering one request at a time.
Every compilation happens before timing and is reported on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from research.bench.inference_loadgen import loadgen_records
from research.bench.inference_report import markdown_report
from research.bench.inference_settings import (
  PEER_PREFIX,
  BenchSettings,
  check_settings,
  configurations,
)
from research.bench.latency import (
  batch_sweep,
  interleaved_latency,
  realtime_latency,
  saturation_batch_size,
)
from research.data import Dataset
from research.serving.engine import Engine
from research.serving.engines import ENGINE_PRECISION, EngineFactory
from research.serving.export import ExportError, compare_logits
from research.serving.restore import TrainedRun

__all__ = ["BenchSettings", "benchmark_run", "check_settings", "write_benchmark"]

# What the benchmark writes into its output directory (figures: PNG, SVG and PDF each).
BENCH_FILES = (
  "bench.json",
  "bench.md",
  "latency_samples.json",
  "loadgen",
  *(f"{f}.{ext}" for f in ("latency", "batch_sweep") for ext in ("png", "svg", "pdf")),
)


def _make(
  factory: EngineFactory,
  settings: BenchSettings,
  engine: str,
  sizes: tuple[int, ...],
  precision: str,
  device: Any,
) -> Engine:
  """An engine compiled for `sizes`: ours from the factory, a peer's from its ONNX file."""
  if not engine.startswith(PEER_PREFIX):
    return factory.make(engine, sizes, precision, device)
  from research.serving.onnx_runtime import OnnxRuntimeEngine

  path = next(p for p in settings.peers if os.path.basename(p) == engine[len(PEER_PREFIX) :])
  return OnnxRuntimeEngine.from_file(
    path,
    factory.run.input_shape,
    batch_sizes=sizes,
    engine=engine,
    notes=f"an independent deployment ({path}), its own weights, in ONNX Runtime",
  )


def benchmark_run(
  run: TrainedRun,
  data: Dataset,
  out_dir: str,
  settings: BenchSettings,
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """All measurements for `run`, every engine through the same harness; LoadGen logs go under
  `out_dir/loadgen/<engine>/<backend>`."""
  configs = configurations(settings)
  factory = EngineFactory(run, calibration_x=data.x_train)
  records: list[dict[str, Any]] = []
  samples: dict[str, Any] = {}
  unavailable: set[str] = set()
  example = data.x_test[:1]
  reference = None  # the jax fp32 logits on the test set (first backend): what others must match
  serving: dict[str, Any] = {}  # tag -> its batch-1 serving engine, for the interleaved timing
  for engine, backend, precision in configs:
    if engine in unavailable:
      continue
    tag = f"{engine} {backend} {precision}"
    device = jax.devices(backend)[0]
    t = time.perf_counter()
    try:
      sweep_engine = _make(factory, settings, engine, settings.sweep_sizes, precision, device)
      serve_engine = _make(factory, settings, engine, settings.serve_sizes, precision, device)
    except ExportError as e:
      unavailable.add(engine)
      records.append({"engine": engine, "kind": "unavailable", "reason": str(e)})
      log(f"[{engine}] not available for this model: {e}")
      continue
    compile_s = time.perf_counter() - t
    base = {
      "engine": engine,
      "backend": backend,
      "device": sweep_engine.device_kind,
      "precision": precision,
    }
    logits = sweep_engine.logits(data.x_test)
    if reference is None and engine == "jax" and precision == "float32":
      reference = logits
    measured = _accuracy_records(base, sweep_engine, factory, data, logits, reference, compile_s)
    serving[tag] = serve_engine
    timed, samples[tag] = _timing_records(base, serve_engine, sweep_engine, example, settings)
    records += measured + timed
    log(_summary_line(tag, measured + timed, compile_s))
    if settings.loadgen and precision == ENGINE_PRECISION.get(engine, "float32"):
      records += loadgen_records(serve_engine, data, base, out_dir, settings, log)
  if len(serving) > 1:
    log(f"batch-1 serving latency of {len(serving)} engines, interleaved")
    records += _interleaved_records(serving, records, example, settings)
  return {
    "records": records,
    "latency_samples_us": samples,
    "settings": dataclasses.asdict(settings),
    "backends": sorted({b for _, b, _ in configs}),
    "engines": list(dict.fromkeys(e for e, _, _ in configs)),
  }


def _accuracy_records(
  base: dict[str, Any],
  engine: Engine,
  factory: EngineFactory,
  data: Dataset,
  logits: np.ndarray,
  reference: np.ndarray | None,
  compile_s: float,
) -> list[dict[str, Any]]:
  """A configuration's test accuracy (and agreement with the jax fp32 logits) and compilation."""
  return [
    {
      **base,
      "kind": "accuracy",
      "test_accuracy": float(np.mean(logits.argmax(-1) == data.y_test)),
      "test_examples": len(data.y_test),
      "model_bytes": engine.model_bytes,
      "notes": engine.notes,
      **(
        {"agreement_with_jax_fp32": compare_logits(reference, logits)}
        if reference is not None and not base["engine"].startswith(PEER_PREFIX)
        else {}
      ),
    },
    {
      **base,
      "kind": "compile",
      "seconds_total": compile_s,
      "seconds_by_batch_size": {**engine.compile_seconds},
      "export_seconds": dict(factory.export_seconds) if base["engine"] != "jax" else {},
    },
  ]


def _timing_records(
  base: dict[str, Any],
  serve_engine: Engine,
  sweep_engine: Engine,
  example: np.ndarray,
  settings: BenchSettings,
) -> tuple[list[dict[str, Any]], Any]:
  """(records, batch-1 samples): batch-1 latency through the serving path, the batch sweep and
  where its throughput saturates."""
  rt = realtime_latency(serve_engine, example, n_calls=settings.latency_calls)
  samples_us = rt.pop("samples_us")
  sweep = batch_sweep(sweep_engine, seconds_per_size=settings.seconds_per_size)
  best = max(sweep, key=lambda r: r["examples_per_s"])
  records = [
    {**base, "kind": "realtime", **rt},
    *({**base, "kind": "batch", **r} for r in sweep),
    {
      **base,
      "kind": "saturation",
      "batch_size": saturation_batch_size(sweep, settings.saturation_fraction),
      "fraction": settings.saturation_fraction,
      "best_batch_size": best["batch_size"],
      "best_examples_per_s": best["examples_per_s"],
      "best_us_per_example": best["us_per_example"],
    },
  ]
  return records, samples_us


def _summary_line(tag: str, records: list[dict[str, Any]], compile_s: float) -> str:
  """One configuration's headline for the log, from its accuracy, realtime and saturation
  records."""
  by_kind = {r["kind"]: r for r in records}
  rt, sat = by_kind["realtime"], by_kind["saturation"]
  return (
    f"[{tag}] accuracy {by_kind['accuracy']['test_accuracy']:.4f}; batch 1 p50 "
    f"{rt['serving']['p50_us']:.1f} µs "
    f"(bare call {rt['floor']['p50_us']:.1f} µs, x{rt['serving_over_floor_p50']:.2f}; "
    f"compute alone {rt['compute']['p50_us']:.1f} µs); "
    f"throughput saturates at batch {sat['batch_size']}, best "
    f"{sat['best_examples_per_s']:,.0f}/s; "
    f"compile {compile_s:.1f} s"
  )


def _interleaved_records(
  serving: dict[str, Engine],
  records: list[dict[str, Any]],
  example: np.ndarray,
  settings: BenchSettings,
) -> list[dict[str, Any]]:
  """Batch-1 serving latency of every configuration again, their calls interleaved in blocks in
  one pass, so the machine's drift falls on all alike."""
  bases = {
    f"{r['engine']} {r['backend']} {r['precision']}": r for r in records if r["kind"] == "realtime"
  }
  out = []
  for tag, stats in interleaved_latency(serving, example, settings.latency_calls).items():
    base = {k: bases[tag][k] for k in ("engine", "backend", "device", "precision")}
    out.append({**base, "kind": "realtime_interleaved", "serving": stats})
  return out


def write_benchmark(
  workdir: str,
  checkpoint: str | int,
  settings: BenchSettings,
  argv: list[str],
  out: str | None = None,
  log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], str]:
  """Benchmarks a run's checkpoint and writes bench.{json,md}, latency.*, batch_sweep.* into
  `out` (default WORKDIR/bench), and bench.md and the figures into the run's TensorBoard
  summary (Text and Images tabs; research/dashboard.py).

  Returns the provenance and the output directory.
  """
  from research import dashboard, workdir_lock
  from research import workdir as workdir_lib
  from research.outputs import OutputError, check_output_dir, writable
  from research.serving.run_kind import require_classifier

  check_settings(settings)
  require_classifier(workdir, "scripts/bench_inference.py")
  # Before any work: where the results go, and whether the workdir takes the TensorBoard summary
  # (skipped when read-only and --out is elsewhere) and a --profile trace.
  dirs = (workdir, dashboard.summary_dir(workdir))
  read_only = not all(writable(d) for d in dirs if os.path.isdir(d))
  if read_only and (not out or settings.profile):
    raise OutputError(
      f"workdir {workdir} is read-only: the benchmark writes WORKDIR/bench and TensorBoard "
      f"summaries{' and traces' if settings.profile else ''} there; pass --out DIR to write it "
      f"elsewhere{' (without --profile)' if settings.profile else ''}"
    )
  out = os.path.abspath(out or workdir_lib.path(workdir, workdir_lib.BENCH))
  check_output_dir(
    out,
    "--out",
    names=BENCH_FILES,
    inputs=[("--workdir", workdir), *(("--peer-onnx", p) for p in settings.peers)],
    runs=[workdir],
    own=[workdir_lib.path(workdir, workdir_lib.BENCH)],  # the run's own benchmark: this one
  )
  # Into a writable run it writes its summary (and by default bench/): one writer at a time.
  with contextlib.nullcontext() if read_only else workdir_lock.hold([workdir]):
    return _measure_and_write(workdir, checkpoint, settings, argv, out, read_only, log)


def _measure_and_write(
  workdir: str,
  checkpoint: str | int,
  settings: BenchSettings,
  argv: list[str],
  out: str,
  read_only: bool,
  log: Callable[[str], None],
) -> tuple[dict[str, Any], str]:
  from research import dashboard
  from research.bench import figures
  from research.data import load_dataset
  from research.outputs import replacing, write_json, write_text
  from research.provenance import provenance
  from research.serving.restore import load_run

  run = load_run(workdir, checkpoint)
  data = load_dataset(run.config.data)
  t = time.perf_counter()
  # Everything goes into a copy of OUT that replaces it whole at the end (its LoadGen logs
  # re-made): a failure or a signal part-way leaves OUT as it was, not half old and half new.
  with replacing(out, remake=("loadgen",)) as staging:
    result = _renamed(benchmark_run(run, data, staging, settings, log=log), staging, out)
    if settings.profile:
      from research.bench.trace import trace_inference

      result["profile"] = trace_inference(run, data.x_test, os.path.abspath(workdir))
      log(f"  profile: a trace of jax inference in {workdir}/plugins/profile (Profile tab)")
    meta = provenance(
      argv,
      workdir=os.path.abspath(workdir),
      step=run.step,
      experiment=run.config.experiment,
      wall_seconds=time.perf_counter() - t,
      tensorboard_summary=None if read_only else dashboard.summary_dir(workdir),
    )
    title = f"Inference benchmark: {run.config.experiment} (step {run.step})"
    samples = result.pop("latency_samples_us")
    write_json(os.path.join(staging, "bench.json"), {"provenance": meta, **result})
    text = markdown_report(result, title, meta["markdown"])
    write_text(os.path.join(staging, "bench.md"), text + "\n")
    # latency.*, batch_sweep.* (PNG, SVG, PDF) and latency_samples.json, so scripts/replot.py
    # can re-draw them without measuring again
    figures.write_benchmark_figures(result, samples, staging, run.config.experiment)
  if read_only:
    log(
      f"  workdir {workdir} is read-only: no TensorBoard summary written (the files are in {out})"
    )
  else:
    dashboard.publish_report(
      workdir,
      run.step,
      "bench",
      text,
      [os.path.join(out, "latency.png"), os.path.join(out, "batch_sweep.png")],
    )
  return meta, out


def _renamed(obj: Any, staging: str, out: str) -> Any:
  """`obj` with every path under the temporary `staging` named under `out`, where it will be."""
  if isinstance(obj, str) and (obj == staging or obj.startswith(staging + os.sep)):
    return out + obj[len(staging) :]
  if isinstance(obj, dict):
    return {k: _renamed(v, staging, out) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_renamed(v, staging, out) for v in obj)
  return obj
