"""Running one LoadGen scenario on a `Predictor`, and the Server QPS search.

LoadGen issues queries, times them, and writes its own logs; we only answer. The four scenarios:
  SingleStream  one sample per query, the next issued when the last completes; metric: p90 latency.
  MultiStream   `samples_per_query` samples per query, one query in flight; metric: p99 per-query
                latency.
  Offline       one query holding every sample; metric: samples/s.
  Server        single-sample queries with Poisson arrivals at a target QPS; a run is VALID when
                its p99 latency stays within the bound; metric: the highest such QPS
                (`find_server_qps` searches for it, one LoadGen run per trial).

Validity comes from LoadGen itself: besides min duration and min query count, its early-stopping
rule needs enough queries for the percentile it reports (SingleStream 64, MultiStream 662,
Server 459 if no query runs late, 662 with one late), so short runs keep those floors. LoadGen
pre-generates its queries from an expected latency (or QPS); a SUT faster than that runs out of
queries before the minimum duration, which LoadGen calls INVALID, so the expectations are
measured before each run.
LoadGen is one global test per process: runs here are serialized by a lock.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import threading
import time
from typing import Any

import numpy as np

from research.bench.loadgen.binding import LoadGenRunError, _lg
from research.bench.loadgen.logs import read_accuracy_log, summarize_logs
from research.bench.loadgen.suts import _Responder, _SampleLibrary, _ServerSUT, _SynchronousSUT

SCENARIOS = ("SingleStream", "MultiStream", "Offline", "Server")
MODES = ("performance", "accuracy")

# The fewest queries with which LoadGen's early-stopping check (99% confidence) can pass; fewer
# end INVALID however fast the SUT. Server needs 459 with no late query, 662 with one.
EARLY_STOPPING_MIN_QUERIES = {"SingleStream": 64, "MultiStream": 662, "Offline": 1, "Server": 662}
DEFAULT_DURATION_MS = 2000  # short runs; full_length takes LoadGen's 10 minutes
DEFAULT_PERFORMANCE_COUNT = 1024  # samples LoadGen draws from; ours all sit in memory anyway
# Server's default target QPS (and the search's start) as a fraction of the estimated capacity:
# LoadGen's per-query Python calls, queueing and thread switches cost more than a small model
# (within 10 ms the CNN sustains a third to a half of its batch-1 estimate on this CPU).
DEFAULT_SERVER_LOAD = 0.1

_LOADGEN_LOCK = threading.Lock()  # LoadGen keeps one global test state


# ----------------------------------------------------------------------------------------------
# Running one scenario.


def _min_seconds(fn, repeats: int = 20) -> float:
  fn()  # warm (no compile: the predictor has every size already)
  best = math.inf
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best


def measure_call_seconds(predictor, samples: np.ndarray, batch: int, repeats: int = 20) -> float:
  """Fastest of `repeats` predictor calls on `batch` samples: what LoadGen's expectations use."""
  x = samples[np.arange(batch) % len(samples)]
  return _min_seconds(lambda: predictor.logits(x), repeats)


@dataclasses.dataclass(frozen=True)
class ScenarioSettings:
  """How one LoadGen run is set up, whatever its scenario.

  Short by default: `duration_ms` (default 2 s) and the early-stopping floor of queries.
  `full_length`: LoadGen's built-in MLPerf values for any model (10 minutes, its query counts),
  which an explicit `duration_ms` / `min_query_count` still overrides. In accuracy `mode` every
  loaded sample is answered once.
  """

  mode: str = "performance"
  duration_ms: int | None = None
  min_query_count: int | None = None
  full_length: bool = False
  max_duration_ms: int = 0
  seed: int = 0
  # Server: batch what is waiting or answer one at a time, the p99 bound, the Poisson load
  # (default: DEFAULT_SERVER_LOAD of `estimate_server_capacity_qps`).
  batching: bool = True
  latency_bound_ms: float = 10.0
  target_qps: float | None = None
  samples_per_query: int = 8  # MultiStream's
  # What only sizes LoadGen's pre-generated queries; measured unless given.
  expected_latency_ms: float | None = None
  expected_qps: float | None = None
  performance_count: int | None = None  # samples LoadGen draws from (default 1024)
  trace: bool = False  # LoadGen's trace log


def make_test_settings(scenario: str, settings: ScenarioSettings = ScenarioSettings()):
  """LoadGen TestSettings for one run, before its scenario's expected latency / QPS."""
  if scenario not in SCENARIOS:
    raise ValueError(f"unknown scenario {scenario!r}; choose one of: {', '.join(SCENARIOS)}")
  if settings.mode not in MODES:
    raise ValueError(f"unknown mode {settings.mode!r}; choose one of: {', '.join(MODES)}")
  lg = _lg()
  test = lg.TestSettings()
  test.scenario = getattr(lg.TestScenario, scenario)
  if settings.full_length:
    # conf_type 0: only the mlperf.conf compiled into LoadGen; its '*' entries fit any model.
    if test.FromConfig("", "research", scenario, 0) != 0:
      raise LoadGenRunError(f"LoadGen could not load its built-in mlperf.conf for {scenario}")
  performance = settings.mode == "performance"
  test.mode = lg.TestMode.PerformanceOnly if performance else lg.TestMode.AccuracyOnly
  if settings.duration_ms is not None or not settings.full_length:
    duration = DEFAULT_DURATION_MS if settings.duration_ms is None else settings.duration_ms
    test.min_duration_ms = int(duration)
  if settings.min_query_count is not None:
    test.min_query_count = int(settings.min_query_count)
  elif not settings.full_length:
    test.min_query_count = EARLY_STOPPING_MIN_QUERIES[scenario]
  test.max_duration_ms = int(settings.max_duration_ms)
  test.sample_index_rng_seed = test.schedule_rng_seed = test.qsl_rng_seed = settings.seed
  return test


def run_scenario(
  predictor,
  samples: np.ndarray,
  scenario: str,
  log_dir: str,
  settings: ScenarioSettings = ScenarioSettings(),
  labels: np.ndarray | None = None,
) -> dict[str, Any]:
  """One LoadGen run of `scenario` on `predictor` over `samples`; its logs go to `log_dir`,
  which must hold no earlier run's logs.

  In accuracy mode, with `labels`, the record carries top-1 accuracy read back from LoadGen's
  accuracy log. Raises LoadGenRunError (from the original exception) when the predictor fails
  mid-run.
  """
  test = make_test_settings(scenario, settings)
  samples = predictor.check_input(samples)  # float32 [N, *input_shape], finite
  log_dir = _fresh_log_dir(log_dir)
  chosen = _set_expectations(test, predictor, samples, scenario, settings)
  perf_count = min(len(samples), settings.performance_count or DEFAULT_PERFORMANCE_COUNT)
  record_settings = {
    "scenario": scenario,
    "mode": settings.mode,
    "full_length": settings.full_length,
    "min_duration_ms": test.min_duration_ms,
    "max_duration_ms": test.max_duration_ms,
    "min_query_count": test.min_query_count,
    "performance_count": perf_count,
    "sample_count": len(samples),
    "seed": settings.seed,
    **chosen,
    "predictor_batch_sizes": list(predictor.batch_sizes),
    "precision": getattr(predictor, "precision", None),
  }
  responder = _Responder(predictor, samples)
  compiles_before = predictor.compile_count
  t0 = time.perf_counter()
  _run_loadgen(responder, test, scenario, settings, perf_count, log_dir)
  wall_s = time.perf_counter() - t0
  if responder.error is not None and not isinstance(responder.error, Exception):
    raise responder.error  # Ctrl-C, SIGTERM or SIGHUP (cli.run_main): the command stops
  if responder.error is not None:
    raise LoadGenRunError(
      f"{scenario} run failed inside the predictor "
      f"({type(responder.error).__name__}: {responder.error}); "
      f"LoadGen's logs are in {log_dir}"
    ) from responder.error

  record: dict[str, Any] = {"scenario": scenario, "mode": settings.mode}
  if settings.mode == "performance":
    record.update(summarize_logs(log_dir, scenario))
  else:
    record.update(_accuracy_fields(predictor, samples, log_dir, labels))
  calls = responder.batch_sizes
  record.update(
    settings=record_settings,
    sut={
      "predictor_calls": sum(calls.values()),
      "samples_answered": responder.samples_answered,
      "batch_size_histogram": {str(k): v for k, v in sorted(calls.items())},
      "mean_batch_size": (responder.samples_answered / sum(calls.values()) if calls else None),
      "padded_size_histogram": _padded_histogram(predictor, calls),
      "compiles_during_run": predictor.compile_count - compiles_before,
    },
    log_dir=log_dir,
    wall_s=wall_s,
  )
  return record


def _fresh_log_dir(log_dir: str) -> str:
  """`log_dir` made absolute and created; refused when it holds an earlier run's logs."""
  log_dir = os.path.abspath(log_dir)
  os.makedirs(log_dir, exist_ok=True)
  stale = [n for n in os.listdir(log_dir) if n.startswith("mlperf_log_")]
  if stale:
    raise ValueError(
      f"{log_dir} already holds LoadGen logs ({', '.join(sorted(stale))}); give "
      f"each run its own directory"
    )
  return log_dir


def _set_expectations(
  test, predictor, samples: np.ndarray, scenario: str, settings: ScenarioSettings
) -> dict[str, Any]:
  """Sets the scenario's expected latency / QPS (Server: its load and bound) on `test`; returns
  the values chosen, for the record."""
  # LoadGen pre-generates 2x the queries the expected latency implies. Short runs expect half the
  # fastest call (4x enough); full-length ones the fastest call itself, since a 10-minute run of a
  # tens-of-microseconds model already means tens of millions of pre-generated queries.
  latency_factor = 1.0 if settings.full_length else 0.5
  expected_latency_ms, chosen = settings.expected_latency_ms, {}
  if scenario == "SingleStream":
    if expected_latency_ms is None:
      expected_latency_ms = latency_factor * 1e3 * measure_call_seconds(predictor, samples, 1)
    test.single_stream_expected_latency_ns = max(1000, int(expected_latency_ms * 1e6))
    chosen["expected_latency_ms"] = test.single_stream_expected_latency_ns / 1e6
  elif scenario == "MultiStream":
    per_query = int(settings.samples_per_query)
    test.multi_stream_samples_per_query = per_query
    if expected_latency_ms is None:
      call_s = measure_call_seconds(predictor, samples, per_query)
      expected_latency_ms = latency_factor * 1e3 * call_s
    test.multi_stream_expected_latency_ns = max(1000, int(expected_latency_ms * 1e6))
    chosen["samples_per_query"] = per_query
    chosen["expected_latency_ms"] = test.multi_stream_expected_latency_ns / 1e6
  elif scenario == "Offline":
    expected_qps = settings.expected_qps
    if expected_qps is None:  # the predictor's best throughput: the run cannot end sooner
      largest = predictor.batch_sizes[-1]
      expected_qps = largest / measure_call_seconds(predictor, samples, largest)
    test.offline_expected_qps = float(expected_qps)
    chosen["expected_qps"] = float(expected_qps)
  else:
    target_qps = settings.target_qps
    if target_qps is None:
      capacity = estimate_server_capacity_qps(predictor, samples, settings.batching)
      target_qps = DEFAULT_SERVER_LOAD * capacity
    test.server_target_qps = float(target_qps)
    test.server_target_latency_ns = int(settings.latency_bound_ms * 1e6)
    test.server_target_latency_percentile = 0.99
    test.server_coalesce_queries = True
    chosen.update(
      target_qps=float(target_qps),
      latency_bound_ms=float(settings.latency_bound_ms),
      batching=bool(settings.batching),
    )
  return chosen


def _run_loadgen(
  responder: _Responder,
  test,
  scenario: str,
  settings: ScenarioSettings,
  perf_count: int,
  log_dir: str,
) -> None:
  """LoadGen's run itself, under the process-wide lock; the SUT and QSL are always destroyed."""
  lg = _lg()
  log_settings = lg.LogSettings()
  log_settings.log_output.outdir = log_dir
  log_settings.log_output.copy_summary_to_stdout = False
  log_settings.enable_trace = bool(settings.trace)
  largest = responder.predictor.batch_sizes[-1]
  with _LOADGEN_LOCK:
    qsl = _SampleLibrary(responder.samples, perf_count)
    sut = None
    try:
      if scenario == "Server":
        sut = _ServerSUT(responder, largest if settings.batching else 1)
      else:
        sut = _SynchronousSUT(responder, largest)
      # A path that does not exist: LoadGen would otherwise pick up ./audit.config.
      lg.StartTestWithLogSettings(
        sut.handle, qsl.handle, test, log_settings, os.path.join(log_dir, "no_audit.config")
      )
    finally:
      try:
        if sut is not None:
          try:
            sut.stop()
          finally:
            sut.destroy()
      finally:
        qsl.destroy()


def _accuracy_fields(
  predictor, samples: np.ndarray, log_dir: str, labels: np.ndarray | None
) -> dict[str, Any]:
  """An accuracy run's samples logged, and with `labels` its top-1 accuracy from LoadGen's log."""
  logged = read_accuracy_log(log_dir, int(predictor.logits(samples[:1]).shape[-1]))
  out: dict[str, Any] = {"valid": None, "samples_logged": len(logged)}
  if labels is not None:
    labels = np.asarray(labels)
    indices = np.fromiter(logged, dtype=np.int64)
    predicted = np.array([np.argmax(logged[i]) for i in indices])
    out["top1_accuracy"] = float(np.mean(predicted == labels[indices]))
  return out


def _padded_histogram(predictor, calls: collections.Counter) -> dict[str, int]:
  padded: collections.Counter = collections.Counter()
  for n, count in calls.items():
    full, rest = divmod(n, predictor.batch_sizes[-1])
    if full:
      padded[predictor.batch_sizes[-1]] += full * count
    if rest:
      padded[predictor.padded_size(rest)] += count
  return {str(k): v for k, v in sorted(padded.items())}


# ----------------------------------------------------------------------------------------------
# Server: the highest QPS that stays VALID.


def estimate_server_capacity_qps(predictor, samples: np.ndarray, batching: bool) -> float:
  """Samples/s one worker could answer if nothing else cost time: the fastest gather + predictor
  call + responses, at batch 1 or (batching) the best compiled size. Real serving adds LoadGen's
  issue calls, queueing and thread switches, so a sustainable QPS is well below this."""
  lg = _lg()

  def answer_seconds(batch: int) -> float:
    indices = np.arange(batch) % len(samples)

    def answer():
      logits = predictor.logits(samples[indices])
      row_bytes = logits.strides[0]
      [
        lg.QuerySampleResponse(i, logits.ctypes.data + i * row_bytes, row_bytes)
        for i in range(batch)
      ]

    return _min_seconds(answer, repeats=10)

  sizes = predictor.batch_sizes if batching else (1,)
  return max(b / answer_seconds(b) for b in sizes)
