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

import dataclasses
import os
import shutil
import time
from typing import Any, Callable

import jax
import numpy as np

from research.bench import loadgen
from research.bench.inference_report import markdown_report
from research.bench.latency import (
  batch_sweep,
  interleaved_latency,
  realtime_latency,
  saturation_batch_size,
)
from research.data import Dataset
from research.serving import InferenceError
from research.serving.engine import Engine
from research.serving.engines import (
  ENGINE_PRECISION,
  EngineFactory,
  available_engines,
  check_engines,
)
from research.serving.export import ExportError, compare_logits
from research.serving.quantize import PRECISIONS
from research.serving.restore import TrainedRun


@dataclasses.dataclass
class BenchSettings:
  precisions: tuple[str, ...] = PRECISIONS  # of the jax engine; ONNX engines have one each
  backends: tuple[str, ...] | None = None  # of the jax engine; None: every backend JAX sees
  engines: tuple[str, ...] | None = None  # None: every engine installed (serving.engines)
  peers: tuple[str, ...] = ()  # ONNX files of independent deployments, timed in ONNX Runtime
  sweep_sizes: tuple[int, ...] = tuple(2**i for i in range(13))  # 1 ... 4096
  serve_sizes: tuple[int, ...] = (1, 4, 16, 64, 256)  # compiled for serving and LoadGen
  latency_calls: int = 2000
  seconds_per_size: float = 0.25
  saturation_fraction: float = 0.9
  loadgen: bool = True
  loadgen_duration_ms: int = 1500
  latency_bound_ms: float = 10.0
  server_max_runs: int = 7
  full_length: bool = False
  profile: bool = False  # a jax.profiler trace of jax-engine inference, after the timings


def available_backends() -> list[str]:
  """'cpu', plus 'gpu' / 'tpu' when JAX has them."""
  found = []
  for name in ("cpu", "gpu", "tpu"):
    try:
      if jax.devices(name):
        found.append(name)
    except RuntimeError:
      pass
  return found


def configurations(settings: BenchSettings) -> list[tuple[str, str, str]]:
  """(engine, backend, precision) in the order they are measured: jax on every backend and
  precision, then each ONNX engine (CPU, its one precision)."""
  backends = settings.backends or tuple(available_backends())
  for b in backends:
    if b not in available_backends():
      raise InferenceError(
        f"backend {b!r} is not available here (have: "
        f"{', '.join(available_backends())}); drop it from --backends"
      )
  engines = check_engines(settings.engines or available_engines())
  out = []
  for engine in engines:
    if engine == "jax":
      out += [(engine, b, p) for b in backends for p in settings.precisions]
    else:
      out.append((engine, "cpu", ENGINE_PRECISION[engine]))
  for path in settings.peers:
    if not os.path.isfile(path):
      raise InferenceError(f"no peer ONNX file at {path}; check --peer-onnx")
    out.append((PEER_PREFIX + os.path.basename(path), "cpu", "float32"))
  return out


PEER_PREFIX = "peer-"


def check_settings(settings: BenchSettings) -> None:
  """Every name and number of `settings`, before a run is restored or a file written."""
  unknown = [p for p in settings.precisions if p not in PRECISIONS]
  if unknown or not settings.precisions:
    raise InferenceError(f"unknown precision(s) {unknown}; choose from: {', '.join(PRECISIONS)}")
  sizes = min(settings.sweep_sizes + settings.serve_sizes, default=0)
  for name, value in (("batch sizes", sizes), ("--latency-calls", settings.latency_calls),
                      ("--loadgen-ms", settings.loadgen_duration_ms),
                      ("--latency-bound-ms", settings.latency_bound_ms),
                      ("--server-runs", settings.server_max_runs)):  # fmt: skip
    if not value > 0:
      raise InferenceError(f"{name} must be positive, got {value}")
  configurations(settings)  # engines, backends, peer files


def _make(factory, settings, engine, sizes, precision, device):
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
    accuracy = float(np.mean(logits.argmax(-1) == data.y_test))
    records.append(
      {
        **base,
        "kind": "accuracy",
        "test_accuracy": accuracy,
        "test_examples": len(data.y_test),
        "model_bytes": sweep_engine.model_bytes,
        "notes": sweep_engine.notes,
        **(
          {"agreement_with_jax_fp32": compare_logits(reference, logits)}
          if reference is not None and not engine.startswith(PEER_PREFIX)
          else {}
        ),
      }
    )
    records.append(
      {
        **base,
        "kind": "compile",
        "seconds_total": compile_s,
        "seconds_by_batch_size": {**sweep_engine.compile_seconds},
        "export_seconds": dict(factory.export_seconds) if engine != "jax" else {},
      }
    )
    serving[tag] = serve_engine
    rt = realtime_latency(serve_engine, example, n_calls=settings.latency_calls)
    samples[tag] = rt.pop("samples_us")
    records.append({**base, "kind": "realtime", **rt})
    sweep = batch_sweep(sweep_engine, seconds_per_size=settings.seconds_per_size)
    saturation = saturation_batch_size(sweep, settings.saturation_fraction)
    best = max(sweep, key=lambda r: r["examples_per_s"])
    records += [{**base, "kind": "batch", **r} for r in sweep]
    records.append(
      {
        **base,
        "kind": "saturation",
        "batch_size": saturation,
        "fraction": settings.saturation_fraction,
        "best_batch_size": best["batch_size"],
        "best_examples_per_s": best["examples_per_s"],
        "best_us_per_example": best["us_per_example"],
      }
    )
    log(
      f"[{tag}] accuracy {accuracy:.4f}; batch 1 p50 {rt['serving']['p50_us']:.1f} µs "
      f"(bare call {rt['floor']['p50_us']:.1f} µs, x{rt['serving_over_floor_p50']:.2f}; "
      f"compute alone {rt['compute']['p50_us']:.1f} µs); "
      f"throughput saturates at batch {saturation}, best {best['examples_per_s']:,.0f}/s; "
      f"compile {compile_s:.1f} s"
    )
    if settings.loadgen and precision == ENGINE_PRECISION.get(engine, "float32"):
      records += _loadgen_records(serve_engine, data, base, out_dir, settings, log)
  if len(serving) > 1:
    log(f"batch-1 serving latency of {len(serving)} engines, interleaved")
    bases = {
      f"{r['engine']} {r['backend']} {r['precision']}": r
      for r in records
      if r["kind"] == "realtime"
    }
    for tag, stats in interleaved_latency(serving, example, settings.latency_calls).items():
      base = {k: bases[tag][k] for k in ("engine", "backend", "device", "precision")}
      records.append({**base, "kind": "realtime_interleaved", "serving": stats})
  return {
    "records": records,
    "latency_samples_us": samples,
    "settings": dataclasses.asdict(settings),
    "backends": sorted({b for _, b, _ in configs}),
    "engines": list(dict.fromkeys(e for e, _, _ in configs)),
  }


def _loadgen_records(
  predictor: Engine,
  data: Dataset,
  base: dict,
  out_dir: str,
  settings: BenchSettings,
  log: Callable[[str], None],
) -> list[dict[str, Any]]:
  root = os.path.join(out_dir, "loadgen", base["engine"], base["backend"])
  x = data.x_test
  run = loadgen.ScenarioSettings(
    full_length=settings.full_length,
    duration_ms=None if settings.full_length else settings.loadgen_duration_ms,
  )
  out = []
  for scenario in ("SingleStream", "MultiStream", "Offline"):
    r = loadgen.run_scenario(predictor, x, scenario, os.path.join(root, scenario), run)
    out.append({**base, "kind": "loadgen", "scenario": scenario, **_slim(r)})
    log(
      f"[{base['engine']} {base['backend']} LoadGen {scenario}] {r['result']}: "
      f"{r['headline']['name']} {r['headline']['value']:.4g}"
    )
  searches = {}
  for batching in (True, False):
    name = "Server_batched" if batching else "Server_batch1"
    s = loadgen.find_server_qps(
      predictor,
      x,
      os.path.join(root, name),
      loadgen.ScenarioSettings(
        latency_bound_ms=settings.latency_bound_ms,
        batching=batching,
        duration_ms=settings.loadgen_duration_ms,
      ),
      loadgen.ServerSearch(max_runs=settings.server_max_runs),
    )
    best = s["best"] or {}
    searches[name] = s["qps"]
    out.append(
      {
        **base,
        "kind": "loadgen",
        "scenario": name,
        "batching": batching,
        "latency_bound_ms": settings.latency_bound_ms,
        "qps": s["qps"],
        "valid": bool(best.get("valid")),
        "trials": s["trials"],
        **({"best": _slim(best)} if best else {}),
      }
    )
    p99 = (best.get("latency_ms") or {}).get("p99")
    log(
      f"[{base['engine']} {base['backend']} LoadGen {name}] highest VALID QPS "
      f"{s['qps']:,.0f} at p99 {p99 if p99 is None else round(p99, 2)} ms "
      f"(bound {settings.latency_bound_ms} ms)"
    )
  ratio = (
    searches["Server_batched"] / searches["Server_batch1"]
    if searches.get("Server_batch1")
    else None
  )
  out.append(
    {
      **base,
      "kind": "loadgen_server_ratio",
      "batched_over_batch1_qps": ratio,
      "latency_bound_ms": settings.latency_bound_ms,
    }
  )
  return out


def _slim(record: dict[str, Any]) -> dict[str, Any]:
  """A LoadGen record without its bulky fields (they stay in the run's log directory)."""
  return {k: v for k, v in record.items() if k not in ("loadgen_warnings", "responses")}


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
  from research import dashboard
  from research import workdir as workdir_lib
  from research.bench import figures
  from research.data import load_dataset
  from research.outputs import OutputError, check_output_dir, writable
  from research.provenance import provenance, write_json, write_text
  from research.serving.restore import load_run
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
  check_output_dir(out, "--out")
  run = load_run(workdir, checkpoint)
  data = load_dataset(run.config.data)
  os.makedirs(out, exist_ok=True)
  t = time.perf_counter()
  # Re-running into the same OUT replaces its LoadGen logs, as it replaces bench.json; the old
  # ones are kept aside until the new benchmark has finished, and put back if it fails.
  logs, previous = os.path.join(out, "loadgen"), os.path.join(out, "loadgen.previous")
  shutil.rmtree(previous, ignore_errors=True)
  if os.path.isdir(logs):
    os.replace(logs, previous)
  try:
    result = benchmark_run(run, data, out, settings, log=log)
  except BaseException:
    if os.path.isdir(previous):
      shutil.rmtree(logs, ignore_errors=True)
      os.replace(previous, logs)
    raise
  shutil.rmtree(previous, ignore_errors=True)
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
  write_json(os.path.join(out, "bench.json"), {"provenance": meta, **result})
  text = markdown_report(result, title, meta["markdown"])
  write_text(os.path.join(out, "bench.md"), text + "\n")
  # latency.*, batch_sweep.* (PNG, SVG, PDF) and latency_samples.json, so scripts/replot.py
  # can re-draw them without measuring again
  figures.write_benchmark_figures(result, samples, out, run.config.experiment)
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
