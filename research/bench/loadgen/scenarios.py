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


def make_test_settings(
  scenario: str,
  *,
  mode: str = "performance",
  duration_ms: int | None = None,
  min_query_count: int | None = None,
  full_length: bool = False,
  max_duration_ms: int = 0,
  seed: int = 0,
):
  """LoadGen TestSettings for one run, before its scenario's expected latency / QPS.

  Short: `duration_ms` (default 2 s) and the early-stopping floor of queries. `full_length`:
  LoadGen's built-in MLPerf values for any model (10 minutes, its query counts), which an
  explicit `duration_ms` / `min_query_count` still overrides.
  """
  if scenario not in SCENARIOS:
    raise ValueError(f"unknown scenario {scenario!r}; choose one of: {', '.join(SCENARIOS)}")
  if mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
  lg = _lg()
  settings = lg.TestSettings()
  settings.scenario = getattr(lg.TestScenario, scenario)
  if full_length:
    # conf_type 0: only the mlperf.conf compiled into LoadGen; its '*' entries fit any model.
    if settings.FromConfig("", "research", scenario, 0) != 0:
      raise LoadGenRunError(f"LoadGen could not load its built-in mlperf.conf for {scenario}")
  settings.mode = lg.TestMode.PerformanceOnly if mode == "performance" else lg.TestMode.AccuracyOnly
  if duration_ms is not None or not full_length:
    settings.min_duration_ms = int(DEFAULT_DURATION_MS if duration_ms is None else duration_ms)
  if min_query_count is not None:
    settings.min_query_count = int(min_query_count)
  elif not full_length:
    settings.min_query_count = EARLY_STOPPING_MIN_QUERIES[scenario]
  settings.max_duration_ms = int(max_duration_ms)
  settings.sample_index_rng_seed = settings.schedule_rng_seed = settings.qsl_rng_seed = seed
  return settings


def run_scenario(
  predictor,
  samples: np.ndarray,
  scenario: str,
  log_dir: str,
  *,
  mode: str = "performance",
  duration_ms: int | None = None,
  min_query_count: int | None = None,
  full_length: bool = False,
  batching: bool = True,
  latency_bound_ms: float = 10.0,
  target_qps: float | None = None,
  samples_per_query: int = 8,
  expected_latency_ms: float | None = None,
  expected_qps: float | None = None,
  performance_count: int | None = None,
  max_duration_ms: int = 0,
  seed: int = 0,
  labels: np.ndarray | None = None,
  trace: bool = False,
) -> dict[str, Any]:
  """One LoadGen run of `scenario` on `predictor` over `samples`; its logs go to `log_dir`.

  Short by default (see `make_test_settings`); `full_length=True` takes LoadGen's MLPerf
  defaults. `latency_bound_ms` and `target_qps` are Server's (target_qps defaults to a tenth of
  `estimate_server_capacity_qps`); `samples_per_query` is MultiStream's. The expected
  latency / QPS, which only size LoadGen's pre-generated queries, are measured unless given.
  In accuracy mode every loaded sample is answered once; with `labels` the record carries top-1
  accuracy read back from LoadGen's accuracy log.
  Raises LoadGenRunError (from the original exception) when the predictor fails mid-run.
  """
  settings = make_test_settings(
    scenario,
    mode=mode,
    duration_ms=duration_ms,
    min_query_count=min_query_count,
    full_length=full_length,
    max_duration_ms=max_duration_ms,
    seed=seed,
  )
  samples = predictor.check_input(samples)  # float32 [N, *input_shape], finite
  lg = _lg()
  largest = predictor.batch_sizes[-1]
  log_dir = os.path.abspath(log_dir)
  os.makedirs(log_dir, exist_ok=True)
  stale = [n for n in os.listdir(log_dir) if n.startswith("mlperf_log_")]
  if stale:
    raise ValueError(
      f"{log_dir} already holds LoadGen logs ({', '.join(sorted(stale))}); give "
      f"each run its own directory"
    )

  # LoadGen pre-generates 2x the queries the expected latency implies. Short runs expect half the
  # fastest call (4x enough); full-length ones the fastest call itself, since a 10-minute run of a
  # tens-of-microseconds model already means tens of millions of pre-generated queries.
  latency_factor = 1.0 if full_length else 0.5
  chosen: dict[str, Any] = {}
  if scenario == "SingleStream":
    if expected_latency_ms is None:
      expected_latency_ms = latency_factor * 1e3 * measure_call_seconds(predictor, samples, 1)
    settings.single_stream_expected_latency_ns = max(1000, int(expected_latency_ms * 1e6))
    chosen["expected_latency_ms"] = settings.single_stream_expected_latency_ns / 1e6
  elif scenario == "MultiStream":
    settings.multi_stream_samples_per_query = int(samples_per_query)
    if expected_latency_ms is None:
      expected_latency_ms = (
        latency_factor * 1e3 * measure_call_seconds(predictor, samples, samples_per_query)
      )
    settings.multi_stream_expected_latency_ns = max(1000, int(expected_latency_ms * 1e6))
    chosen["samples_per_query"] = int(samples_per_query)
    chosen["expected_latency_ms"] = settings.multi_stream_expected_latency_ns / 1e6
  elif scenario == "Offline":
    if expected_qps is None:  # the predictor's best throughput: the run cannot end sooner
      expected_qps = largest / measure_call_seconds(predictor, samples, largest)
    settings.offline_expected_qps = float(expected_qps)
    chosen["expected_qps"] = float(expected_qps)
  else:
    if target_qps is None:
      target_qps = DEFAULT_SERVER_LOAD * estimate_server_capacity_qps(predictor, samples, batching)
    settings.server_target_qps = float(target_qps)
    settings.server_target_latency_ns = int(latency_bound_ms * 1e6)
    settings.server_target_latency_percentile = 0.99
    settings.server_coalesce_queries = True
    chosen.update(
      target_qps=float(target_qps),
      latency_bound_ms=float(latency_bound_ms),
      batching=bool(batching),
    )

  perf_count = min(len(samples), performance_count or DEFAULT_PERFORMANCE_COUNT)
  log_settings = lg.LogSettings()
  log_settings.log_output.outdir = log_dir
  log_settings.log_output.copy_summary_to_stdout = False
  log_settings.enable_trace = bool(trace)
  record_settings = {
    "scenario": scenario,
    "mode": mode,
    "full_length": full_length,
    "min_duration_ms": settings.min_duration_ms,
    "max_duration_ms": settings.max_duration_ms,
    "min_query_count": settings.min_query_count,
    "performance_count": perf_count,
    "sample_count": len(samples),
    "seed": seed,
    **chosen,
    "predictor_batch_sizes": list(predictor.batch_sizes),
    "precision": getattr(predictor, "precision", None),
  }

  responder = _Responder(predictor, samples)
  compiles_before = predictor.compile_count
  t0 = time.perf_counter()
  with _LOADGEN_LOCK:
    qsl = _SampleLibrary(samples, perf_count)
    sut = None
    try:
      if scenario == "Server":
        sut = _ServerSUT(responder, largest if batching else 1)
      else:
        sut = _SynchronousSUT(responder, largest)
      # A path that does not exist: LoadGen would otherwise pick up ./audit.config.
      lg.StartTestWithLogSettings(
        sut.handle, qsl.handle, settings, log_settings, os.path.join(log_dir, "no_audit.config")
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
  wall_s = time.perf_counter() - t0
  if responder.error is not None:
    raise LoadGenRunError(
      f"{scenario} run failed inside the predictor "
      f"({type(responder.error).__name__}: {responder.error}); "
      f"LoadGen's logs are in {log_dir}"
    ) from responder.error

  record: dict[str, Any] = {"scenario": scenario, "mode": mode}
  if mode == "performance":
    record.update(summarize_logs(log_dir, scenario))
  else:
    logged = read_accuracy_log(log_dir, int(predictor.logits(samples[:1]).shape[-1]))
    record.update(valid=None, samples_logged=len(logged))
    if labels is not None:
      labels = np.asarray(labels)
      indices = np.fromiter(logged, dtype=np.int64)
      predicted = np.array([np.argmax(logged[i]) for i in indices])
      record["top1_accuracy"] = float(np.mean(predicted == labels[indices]))
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
