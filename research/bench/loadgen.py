"""MLPerf LoadGen scenarios around a `Predictor`: the standard way to put numbers on serving.

LoadGen issues queries, times them, and writes its own logs; we only answer. The four scenarios:
  SingleStream  one sample per query, the next issued when the last completes; metric: p90 latency.
  MultiStream   `samples_per_query` samples per query, one query in flight; metric: p99 per-query
                latency.
  Offline       one query holding every sample; metric: samples/s.
  Server        single-sample queries with Poisson arrivals at a target QPS; a run is VALID when
                its p99 latency stays within the bound; metric: the highest such QPS
                (`find_server_qps` searches for it, one LoadGen run per trial).

Padding and batching: the predictor runs only the batch sizes it compiled at warm-up and pads a
batch up to the nearest one (larger batches run in chunks of the largest). Compiling a new shape
mid-run takes long enough to collapse the latency tail, so nothing here compiles: `compile_count`
stays put. In Server, `batching=True` answers whatever is waiting (up to the largest compiled
size) in one call; `batching=False` answers one sample at a time (batch-1 serving).

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
import json
import math
import os
import re
import threading
import time
from typing import Any, NamedTuple, Sequence

import numpy as np

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
WORKER_JOIN_TIMEOUT_S = 60.0
SERVER_WORKER_NAME = "loadgen-server-worker"

_LOADGEN_LOCK = threading.Lock()  # LoadGen keeps one global test state


class LoadGenRunError(RuntimeError):
  """The SUT failed during a LoadGen run; `__cause__` holds the original exception."""


def _lg():
  import mlperf_loadgen  # imported late: only benchmarks need the package
  return mlperf_loadgen


# ----------------------------------------------------------------------------------------------
# The system under test.

class _SampleLibrary:
  """A QSL over an in-memory array: load and unload have nothing to do."""

  def __init__(self, samples: np.ndarray, performance_count: int):
    self.samples = samples
    self.performance_count = performance_count
    self.handle = _lg().ConstructQSL(len(samples), performance_count, self._load, self._unload)

  def _load(self, indices):
    pass

  def _unload(self, indices):
    pass

  def destroy(self) -> None:
    _lg().DestroyQSL(self.handle)


class _Sample(NamedTuple):
  id: int
  index: int


class _Responder:
  """Runs the predictor on a list of LoadGen samples and completes them, never raising.

  An exception is recorded, the samples are completed empty (LoadGen would otherwise wait for
  them forever) and every later query completes at once; `run_scenario` raises it afterwards.
  """

  def __init__(self, predictor, samples: np.ndarray):
    self.predictor = predictor
    self.samples = samples
    self.error: BaseException | None = None
    self.batch_sizes = collections.Counter()  # samples per predictor call
    self.samples_answered = 0

  def answer(self, query_samples: Sequence[Any]) -> None:
    lg = _lg()
    if self.error is None:
      try:
        x = self.samples[[q.index for q in query_samples]]
        logits = np.ascontiguousarray(self.predictor.logits(x), dtype=np.float32)
        if logits.shape[0] != len(query_samples):
          raise ValueError(f"predictor returned {logits.shape[0]} rows for "
                           f"{len(query_samples)} samples")
        row_bytes = logits.strides[0]
        base = logits.ctypes.data
        responses = [lg.QuerySampleResponse(q.id, base + i * row_bytes, row_bytes)
                     for i, q in enumerate(query_samples)]
        lg.QuerySamplesComplete(responses)  # copies what it logs before returning
        self.batch_sizes[len(query_samples)] += 1
        self.samples_answered += len(query_samples)
        return
      except BaseException as e:  # noqa: BLE001 -- re-raised by run_scenario
        self.error = e
    lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0) for q in query_samples])


class _SynchronousSUT:
  """SingleStream / MultiStream / Offline: answered inside LoadGen's issue call.

  A query larger than `chunk` (Offline) is answered and completed chunk by chunk.
  """

  def __init__(self, responder: _Responder, chunk: int):
    self.responder = responder
    self.chunk = chunk
    self.handle = _lg().ConstructSUT(self.issue_queries, self.flush_queries)

  def issue_queries(self, query_samples) -> None:
    for i in range(0, len(query_samples), self.chunk):
      self.responder.answer(query_samples[i:i + self.chunk])

  def flush_queries(self) -> None:
    pass

  def stop(self) -> None:
    pass

  def destroy(self) -> None:
    _lg().DestroySUT(self.handle)


class _ServerSUT:
  """Server: LoadGen's issue call only enqueues; one worker thread answers.

  The worker takes whatever is waiting, up to `max_batch` samples (1 for batch-1 serving), and
  answers them with one predictor call (padded by the predictor to a compiled size).
  """

  def __init__(self, responder: _Responder, max_batch: int):
    self.responder = responder
    self.max_batch = max_batch
    self.queue: collections.deque = collections.deque()
    self.ready = threading.Condition()
    self.stopping = False
    self.handle = _lg().ConstructSUT(self.issue_queries, self.flush_queries)
    self.worker = threading.Thread(target=self._serve, name=SERVER_WORKER_NAME, daemon=True)
    self.worker.start()

  def issue_queries(self, query_samples) -> None:
    # Plain (id, index) pairs: the worker never holds LoadGen's objects past this call.
    pending = [_Sample(q.id, q.index) for q in query_samples]
    with self.ready:
      self.queue.extend(pending)
      self.ready.notify()

  def flush_queries(self) -> None:
    pass

  def _serve(self) -> None:
    while True:
      with self.ready:
        while not self.queue and not self.stopping:
          self.ready.wait()
        if not self.queue:
          return  # stopping, and nothing left to answer
        batch = [self.queue.popleft() for _ in range(min(len(self.queue), self.max_batch))]
      self.responder.answer(batch)

  def stop(self) -> None:
    with self.ready:
      self.stopping = True
      self.ready.notify()
    self.worker.join(WORKER_JOIN_TIMEOUT_S)
    if self.worker.is_alive():
      raise LoadGenRunError(f"the Server worker did not stop within {WORKER_JOIN_TIMEOUT_S:g} s")

  def destroy(self) -> None:
    _lg().DestroySUT(self.handle)


# ----------------------------------------------------------------------------------------------
# Reading LoadGen's logs.

_SUMMARY_RESULT = re.compile(r"^Result is\s*:\s*(\w+)", re.MULTILINE)
_MLLOG_PREFIX = ":::MLLOG"


def read_detail_log(path: str) -> dict[str, Any]:
  """The `:::MLLOG` JSON entries of mlperf_log_detail.txt as {key: value}; errors and warnings
  (keys that repeat) are collected under 'errors' and 'warnings'."""
  entries: dict[str, Any] = {"errors": [], "warnings": []}
  with open(path) as f:
    for line in f:
      if not line.startswith(_MLLOG_PREFIX):
        continue
      try:
        entry = json.loads(line[len(_MLLOG_PREFIX):])
      except json.JSONDecodeError:
        continue
      meta = entry.get("metadata") or {}
      if meta.get("is_error"):
        entries["errors"].append(f"{entry['key']}: {entry['value']}")
      elif meta.get("is_warning"):
        entries["warnings"].append(f"{entry['key']}: {entry['value']}")
      entries[entry["key"]] = entry["value"]
  return entries


def read_summary_validity(path: str) -> str:
  """'VALID' or 'INVALID', from the "Result is : ..." line of mlperf_log_summary.txt."""
  with open(path) as f:
    match = _SUMMARY_RESULT.search(f.read())
  if not match:
    raise LoadGenRunError(f"{path} has no 'Result is :' line; LoadGen did not finish the run")
  return match.group(1)


def _ns_to_ms(value: Any) -> float | None:
  return None if value is None else float(value) / 1e6


def _latency_percentiles_ms(detail: dict[str, Any], per_query: bool = False) -> dict[str, float]:
  infix = "per_query_latency" if per_query else "latency"
  out = {}
  for name, key in (("p50", "50.00"), ("p90", "90.00"), ("p95", "95.00"), ("p97", "97.00"),
                    ("p99", "99.00"), ("p99.9", "99.90")):
    value = detail.get(f"result_{key}_percentile_{infix}_ns")
    if value is not None:
      out[name] = _ns_to_ms(value)
  prefix = "result_{}_query_latency_ns" if per_query else "result_{}_latency_ns"
  for name in ("min", "max", "mean"):
    value = detail.get(prefix.format(name))
    if value is not None:
      out[name] = _ns_to_ms(value)
  return out


def summarize_logs(log_dir: str, scenario: str) -> dict[str, Any]:
  """What a run measured, from the summary (validity) and the detail log (numbers)."""
  summary_path = os.path.join(log_dir, "mlperf_log_summary.txt")
  detail_path = os.path.join(log_dir, "mlperf_log_detail.txt")
  for path in (summary_path, detail_path):
    if not os.path.isfile(path):
      raise LoadGenRunError(f"LoadGen wrote no {os.path.basename(path)} into {log_dir}")
  result = read_summary_validity(summary_path)
  detail = read_detail_log(detail_path)
  latency_ms = _latency_percentiles_ms(detail)
  record: dict[str, Any] = {
      "result": result,
      "valid": result == "VALID",
      "latency_ms": latency_ms,
      "query_count": detail.get("result_query_count"),
      "constraints": {
          "min_duration_met": detail.get("result_min_duration_met"),
          "min_queries_met": detail.get("result_min_queries_met"),
          "early_stopping_met": detail.get("early_stopping_met"),
          "perf_constraints_met": detail.get("result_perf_constraints_met"),
      },
      "invalid_reason": (detail.get("result_invalid_reason") or "").strip() or None,
      "early_stopping": " ".join((detail.get("early_stopping_result") or "").split()) or None,
      "generated_query_count": detail.get("generated_query_count"),
      "loadgen_errors": detail["errors"],
      "loadgen_warnings": detail["warnings"],
      "loadgen_version": detail.get("loadgen_version"),
  }
  if detail.get("result_validity") not in (None, result):
    raise LoadGenRunError(f"{log_dir}: summary says {result} but detail log says "
                          f"{detail.get('result_validity')}")
  if scenario == "SingleStream":
    record["headline"] = {"name": "p90_latency_ms", "value": latency_ms.get("p90")}
    record["samples_per_s"] = detail.get("result_qps_with_loadgen_overhead")
    record["samples_per_s_without_loadgen"] = detail.get("result_qps_without_loadgen_overhead")
    record["early_stopping_p90_ms"] = _ns_to_ms(detail.get("early_stopping_latency_ss"))
  elif scenario == "MultiStream":
    query_ms = _latency_percentiles_ms(detail, per_query=True)
    record["query_latency_ms"] = query_ms
    record["headline"] = {"name": "p99_query_latency_ms", "value": query_ms.get("p99")}
    record["early_stopping_p99_ms"] = _ns_to_ms(detail.get("early_stopping_latency_ms"))
  elif scenario == "Offline":
    record["samples_per_s"] = detail.get("result_samples_per_second")
    record["headline"] = {"name": "samples_per_s", "value": record["samples_per_s"]}
  elif scenario == "Server":
    record["samples_per_s"] = detail.get("result_completed_samples_per_sec")
    record["scheduled_qps"] = detail.get("result_scheduled_samples_per_sec")
    record["overlatency_query_count"] = detail.get("result_overlatency_query_count")
    record["headline"] = {"name": "completed_samples_per_s", "value": record["samples_per_s"]}
  return record


def read_accuracy_log(log_dir: str, num_classes: int) -> dict[int, np.ndarray]:
  """{QSL index: logits} from mlperf_log_accuracy.json (AccuracyOnly runs log every response)."""
  with open(os.path.join(log_dir, "mlperf_log_accuracy.json")) as f:
    entries = json.load(f)
  out = {}
  for entry in entries:
    row = np.frombuffer(bytes.fromhex(entry["data"]), dtype=np.float32)
    if row.size != num_classes:
      raise LoadGenRunError(f"accuracy log entry for sample {entry['qsl_idx']} holds {row.size} "
                            f"values, expected {num_classes} logits")
    out[int(entry["qsl_idx"])] = row
  return out


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


def make_test_settings(scenario: str, *, mode: str = "performance",
                       duration_ms: int | None = None, min_query_count: int | None = None,
                       full_length: bool = False, max_duration_ms: int = 0, seed: int = 0):
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
  settings.mode = (lg.TestMode.PerformanceOnly if mode == "performance"
                   else lg.TestMode.AccuracyOnly)
  if duration_ms is not None or not full_length:
    settings.min_duration_ms = int(DEFAULT_DURATION_MS if duration_ms is None else duration_ms)
  if min_query_count is not None:
    settings.min_query_count = int(min_query_count)
  elif not full_length:
    settings.min_query_count = EARLY_STOPPING_MIN_QUERIES[scenario]
  settings.max_duration_ms = int(max_duration_ms)
  settings.sample_index_rng_seed = settings.schedule_rng_seed = settings.qsl_rng_seed = seed
  return settings


def run_scenario(predictor, samples: np.ndarray, scenario: str, log_dir: str, *,
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
                 trace: bool = False) -> dict[str, Any]:
  """One LoadGen run of `scenario` on `predictor` over `samples`; its logs go to `log_dir`.

  Short by default (see `make_test_settings`); `full_length=True` takes LoadGen's MLPerf
  defaults. `latency_bound_ms` and `target_qps` are Server's (target_qps defaults to a tenth of
  `estimate_server_capacity_qps`); `samples_per_query` is MultiStream's. The expected
  latency / QPS, which only size LoadGen's pre-generated queries, are measured unless given.
  In accuracy mode every loaded sample is answered once; with `labels` the record carries top-1
  accuracy read back from LoadGen's accuracy log.
  Raises LoadGenRunError (from the original exception) when the predictor fails mid-run.
  """
  settings = make_test_settings(scenario, mode=mode, duration_ms=duration_ms,
                                min_query_count=min_query_count, full_length=full_length,
                                max_duration_ms=max_duration_ms, seed=seed)
  samples = predictor.check_input(samples)  # float32 [N, *input_shape], finite
  lg = _lg()
  largest = predictor.batch_sizes[-1]
  log_dir = os.path.abspath(log_dir)
  os.makedirs(log_dir, exist_ok=True)
  stale = [n for n in os.listdir(log_dir) if n.startswith("mlperf_log_")]
  if stale:
    raise ValueError(f"{log_dir} already holds LoadGen logs ({', '.join(sorted(stale))}); give "
                     f"each run its own directory")

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
      expected_latency_ms = latency_factor * 1e3 * measure_call_seconds(
          predictor, samples, samples_per_query)
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
    chosen.update(target_qps=float(target_qps), latency_bound_ms=float(latency_bound_ms),
                  batching=bool(batching))

  perf_count = min(len(samples), performance_count or DEFAULT_PERFORMANCE_COUNT)
  log_settings = lg.LogSettings()
  log_settings.log_output.outdir = log_dir
  log_settings.log_output.copy_summary_to_stdout = False
  log_settings.enable_trace = bool(trace)
  record_settings = {
      "scenario": scenario, "mode": mode, "full_length": full_length,
      "min_duration_ms": settings.min_duration_ms, "max_duration_ms": settings.max_duration_ms,
      "min_query_count": settings.min_query_count, "performance_count": perf_count,
      "sample_count": len(samples), "seed": seed, **chosen,
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
      lg.StartTestWithLogSettings(sut.handle, qsl.handle, settings, log_settings,
                                  os.path.join(log_dir, "no_audit.config"))
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
    raise LoadGenRunError(f"{scenario} run failed inside the predictor "
                          f"({type(responder.error).__name__}: {responder.error}); "
                          f"LoadGen's logs are in {log_dir}") from responder.error

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
      sut={"predictor_calls": sum(calls.values()),
           "samples_answered": responder.samples_answered,
           "batch_size_histogram": {str(k): v for k, v in sorted(calls.items())},
           "mean_batch_size": (responder.samples_answered / sum(calls.values())
                               if calls else None),
           "padded_size_histogram": _padded_histogram(predictor, calls),
           "compiles_during_run": predictor.compile_count - compiles_before},
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
      [lg.QuerySampleResponse(i, logits.ctypes.data + i * row_bytes, row_bytes)
       for i in range(batch)]
    return _min_seconds(answer, repeats=10)

  sizes = predictor.batch_sizes if batching else (1,)
  return max(b / answer_seconds(b) for b in sizes)


def find_server_qps(predictor, samples: np.ndarray, log_root: str, *,
                    latency_bound_ms: float = 10.0,
                    batching: bool = True,
                    duration_ms: int = 1500,
                    min_query_count: int | None = None,
                    start_qps: float | None = None,
                    growth: float = 2.0,
                    rel_tolerance: float = 0.05,
                    max_runs: int = 10,
                    retry_marginal: bool = True,
                    seed: int = 0) -> dict[str, Any]:
  """Highest Server target QPS whose run is VALID (p99 within `latency_bound_ms`).

  Grows (or shrinks) the QPS geometrically by `growth` from `start_qps` (default: a tenth of
  `estimate_server_capacity_qps`, batch-1 or batched) until a VALID and an INVALID run bracket
  the answer, then bisects until they are within `rel_tolerance` or `max_runs` runs are spent.
  With `retry_marginal`, an INVALID run that kept up on average (completed >= 95% of scheduled:
  only its tail failed) is run once more before it bounds the search, since one stall on a
  shared machine would otherwise cap the answer; overloaded runs are never retried. Each run
  has its own log dir `log_root/trial_NN_<qps>qps`. Returns {'qps', 'best' (the VALID record,
  or None), 'trials', 'bracket', ...}; `max_runs` counts retries.
  """
  if max_runs < 1 or growth <= 1:
    raise ValueError("max_runs must be >= 1 and growth > 1")
  samples = predictor.check_input(samples)
  os.makedirs(log_root, exist_ok=True)
  capacity = None if start_qps else estimate_server_capacity_qps(predictor, samples, batching)
  qps = float(start_qps) if start_qps else DEFAULT_SERVER_LOAD * capacity
  trials: list[dict[str, Any]] = []
  best: dict[str, Any] | None = None
  lo, hi = 0.0, math.inf  # highest VALID, lowest INVALID target QPS so far
  t0 = time.perf_counter()

  def trial(target: float) -> dict[str, Any]:
    log_dir = os.path.join(log_root, f"trial_{len(trials):02d}_{target:.0f}qps")
    record = run_scenario(predictor, samples, "Server", log_dir, duration_ms=duration_ms,
                          min_query_count=min_query_count, batching=batching,
                          latency_bound_ms=latency_bound_ms, target_qps=target, seed=seed)
    trials.append({"target_qps": target, "valid": record["valid"],
                   "p99_ms": record["latency_ms"].get("p99"),
                   "completed_samples_per_s": record["samples_per_s"],
                   "mean_batch_size": record["sut"]["mean_batch_size"],
                   "invalid_reason": record["invalid_reason"], "log_dir": log_dir,
                   "wall_s": record["wall_s"]})
    return record

  while len(trials) < max_runs:
    record = trial(qps)
    if (not record["valid"] and retry_marginal and len(trials) < max_runs
        and _kept_up(record)):
      record = trial(qps)
      trials[-1]["retry"] = True
    if record["valid"]:
      lo = qps
      if best is None or qps > best["settings"]["target_qps"]:
        best = record
    else:
      hi = min(hi, qps)
    if math.isinf(hi):
      qps *= growth  # every run so far VALID: grow
    elif lo == 0.0:
      qps /= growth  # every run so far INVALID: shrink
    elif hi / lo <= 1 + rel_tolerance:
      break
    else:
      qps = math.sqrt(lo * hi)  # bisect geometrically
  return {
      "qps": lo,
      "best": best,
      "trials": trials,
      "bracket": {"valid_qps": lo, "invalid_qps": None if math.isinf(hi) else hi},
      "latency_bound_ms": float(latency_bound_ms),
      "batching": bool(batching),
      "estimated_capacity_qps": capacity,
      "duration_ms": int(duration_ms),
      "log_root": os.path.abspath(log_root),
      "wall_s": time.perf_counter() - t0,
  }


def _kept_up(record: dict[str, Any]) -> bool:
  """Whether a Server run completed (nearly) the samples/s it was sent: a tail, not a backlog."""
  completed, scheduled = record.get("samples_per_s"), record.get("scheduled_qps")
  return bool(completed and scheduled and completed >= 0.95 * scheduled)
