"""MLPerf LoadGen for tokens: a language model served by the MLPerf LLM rules.

The rules (MLPerf Inference's LLM benchmarks, Llama-2-70B and after):
  - TestSettings.use_token_latencies: LoadGen times each sample's first token and its end;
  - the system under test reports the first token through LoadGen's `FirstTokenComplete` (here
    from the Scheduler's on_first_token callback, the moment the token exists) and completes the
    sample with `QuerySamplesComplete`, giving its number of tokens (`n_tokens`);
  - TTFT = first-token latency; TPOT = (latency - TTFT) / (output tokens - 1), per sample (vLLM's
    definition too; JetStream's TPOT includes the first token, ours does not);
  - Server: Poisson arrivals; a run is VALID when p99 TTFT and p99 TPOT each meet their bound
    (checked separately, by LoadGen) and early stopping passes; `search_server_qps` finds the
    highest such QPS by bisection. Offline: tokens/s (tokens / the last completion).
    SingleStream: one request at a time, the unloaded latencies.
  - Goodput: requests/s whose TTFT and TPOT both meet the bounds (vLLM's `bench serve`), from our
    own per-sample times (LoadGen keeps per-sample token latencies to itself).

The system under test (`_TokenSUT`) feeds a `Scheduler` (research/serving/decode_engine.py) that
steps on its own serving thread, continuous or static (wait for a full batch, or `static_wait_s`
since the oldest request came, then run the batch to its longest request). LoadGen's own logs
stay in each run's log directory.

Bounds scale as MLPerf scales them per model (`derive_bounds`): MLPerf's Llama-2-70B bounds over
that model's unloaded batch-1 latency give ratios; ours are the same ratios times our own
unloaded batch-1 TTFT and TPOT (`measure_unloaded`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from research.bench.lm_workload import WorkItem
from research.bench.loadgen.binding import LoadGenRunError, _lg
from research.bench.loadgen.logs import read_detail_log, read_summary_validity
from research.bench.loadgen.scenarios import _LOADGEN_LOCK, EARLY_STOPPING_MIN_QUERIES
from research.serving.decode_engine import DecodeEngine, Request, Scheduler, serve
from research.serving.generate import GenerationError

# ----------------------------------------------------------------------------------------------
# Bounds, scaled as MLPerf scales them per model.

# MLPerf's bounds for Llama-2-70B (loadgen/mlperf.conf: llama2-70b Server ttft_latency 2000 ms,
# tpot_latency 200 ms; llama2-70b-interactive 450 ms, 40 ms).
MLPERF_LLAMA2_70B_BOUNDS_MS = {
  "server": {"ttft": 2000.0, "tpot": 200.0},
  "interactive": {"ttft": 450.0, "tpot": 40.0},
}
# Llama-2-70B's unloaded batch-1 latency on the class of machine that serves it (4 H100s, FP8):
# TTFT 65 ms, TensorRT-LLM's published batch-1 first-token latency (docs/source/performance.md,
# v0.5: 26 ms at 128 prompt tokens, 109 ms at 2048) interpolated to 1024 tokens, the longest
# prompt of MLPerf's Llama-2-70B data set; TPOT 5.2 ms, the memory-bound floor of a batch-1
# decode step (70 GB of FP8 weights read once per token at 4 x 3.35 TB/s; no measured batch-1
# TPOT is published beside that TTFT).
MLPERF_LLAMA2_70B_UNLOADED_MS = {"ttft": 65.0, "tpot": 5.2}
TIERS = tuple(MLPERF_LLAMA2_70B_BOUNDS_MS)


def bound_ratios(tier: str = "server") -> dict[str, float]:
  """MLPerf's bound over the unloaded latency, for TTFT and TPOT (server: about 31x and 38x;
  interactive: about 6.9x and 7.7x)."""
  if tier not in MLPERF_LLAMA2_70B_BOUNDS_MS:
    raise GenerationError(f"unknown bound tier {tier!r}; choose one of: {', '.join(TIERS)}")
  bounds = MLPERF_LLAMA2_70B_BOUNDS_MS[tier]
  return {k: bounds[k] / MLPERF_LLAMA2_70B_UNLOADED_MS[k] for k in ("ttft", "tpot")}


@dataclasses.dataclass(frozen=True)
class Bounds:
  """p99 TTFT and p99 TPOT bounds (ms), and how they were chosen."""

  ttft_ms: float
  tpot_ms: float
  tier: str
  derived: dict[str, bool]  # per bound: scaled from the unloaded latency (else given)
  how: str


def derive_bounds(
  unloaded: dict[str, Any],
  tier: str = "server",
  ttft_ms: float | None = None,
  tpot_ms: float | None = None,
) -> Bounds:
  """Bounds for this model on this machine: each given one as is, else MLPerf's ratio for
  `tier` times our unloaded batch-1 p50 (TTFT at the mix's longest prompt, TPOT)."""
  ratios = bound_ratios(tier)
  ttft = ttft_ms if ttft_ms is not None else ratios["ttft"] * unloaded["ttft_ms"]["p50"]
  tpot = tpot_ms if tpot_ms is not None else ratios["tpot"] * unloaded["tpot_ms"]["p50"]
  ref, mlperf = MLPERF_LLAMA2_70B_UNLOADED_MS, MLPERF_LLAMA2_70B_BOUNDS_MS[tier]
  how = (
    f"MLPerf's Llama-2-70B {tier} bounds ({mlperf['ttft']:g} ms TTFT, {mlperf['tpot']:g} ms "
    f"TPOT) are {ratios['ttft']:.1f}x and {ratios['tpot']:.1f}x that model's unloaded batch-1 "
    f"TTFT ({ref['ttft']:g} ms at a 1024-token prompt, 4 H100s FP8) and TPOT ({ref['tpot']:g} "
    f"ms); the same ratios times this model's unloaded batch-1 p50 here (TTFT "
    f"{unloaded['ttft_ms']['p50']:.3f} ms at the longest prompt of the mix, TPOT "
    f"{unloaded['tpot_ms']['p50']:.3f} ms)"
  )
  if ttft_ms is not None or tpot_ms is not None:
    given = [n for n, v in (("TTFT", ttft_ms), ("TPOT", tpot_ms)) if v is not None]
    how += f"; {' and '.join(given)} given on the command line instead"
  return Bounds(float(ttft), float(tpot), tier, {"ttft": ttft_ms is None, "tpot": tpot_ms is None},
                how)  # fmt: skip


def check_reachable(bounds: Bounds, unloaded: dict[str, Any]) -> None:
  """GenerationError when a bound lies below the unloaded batch-1 p50: no load can meet a p99
  that the lightest load misses half the time."""
  for name, flag in (("ttft", "--ttft-bound-ms"), ("tpot", "--tpot-bound-ms")):
    bound, floor = getattr(bounds, f"{name}_ms"), unloaded[f"{name}_ms"]["p50"]
    if bound < floor:
      raise GenerationError(
        f"{flag} {bound:g} is below this model's unloaded batch-1 {name.upper()} here (p50 "
        f"{floor:.3f} ms): no load can meet it; give at least {floor:.3f} ms, or leave the flag "
        f"out to scale the bound from the unloaded latency as MLPerf does"
      )


LOOSE_HEADROOM = 2.0  # loose bounds: at least this times static's p99 at its lightest load


def loose_factor(bounds: Bounds, static_p99_ms: dict[str, float | None]) -> int:
  """The factor k of the looser comparison: the smallest power of two (>= 1) with k x each bound
  at least LOOSE_HEADROOM x static batching's p99 at the lightest load it was run at under
  `bounds` ({'ttft': ms, 'tpot': ms}; a None p99, no sample, counts as meeting it).

  Why: at MLPerf-scaled bounds a static batch runs to its longest output, longer than the TTFT
  bound, so static meets them at no load and the continuous/static ratio has no finite value.
  Scaling both bounds by one k keeps MLPerf's TTFT:TPOT proportion; 2x static's own lightest-load
  p99 leaves room for its wait for a batch (half the TTFT bound, so it grows with k too) and for
  loads above the lightest; a power of two keeps k a round number."""
  k = 1
  for name in ("ttft", "tpot"):
    p99 = static_p99_ms.get(name)
    bound = getattr(bounds, f"{name}_ms")
    while p99 is not None and k * bound < LOOSE_HEADROOM * p99:
      k *= 2
  return k


def scaled_bounds(bounds: Bounds, k: float, why: str) -> Bounds:
  """`bounds` with both times k; `how` says so and why."""
  return Bounds(bounds.ttft_ms * k, bounds.tpot_ms * k, bounds.tier, dict(bounds.derived),
                f"{k:g}x the headline bounds ({why})")  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Unloaded latency: each request alone on a batch-1 engine.


def _stats(x: Sequence[float]) -> dict[str, float]:
  x = np.asarray(x, np.float64)
  if x.size == 0:
    return {"n": 0}
  p50, p90, p99 = np.percentile(x, [50, 90, 99])
  return {"p50": p50, "p90": p90, "p99": p99, "mean": x.mean(), "max": x.max(), "n": int(x.size)}


def measure_unloaded(
  model: Any,
  params: Any,
  prompt_tokens: int,
  output_tokens: int,
  vocab: int,
  repeats: int = 16,
  prefill_buckets: Sequence[int] | None = None,
  seed: int = 0,
) -> dict[str, Any]:
  """TTFT and TPOT of requests served one at a time by a 1-slot engine (batch 1, no queue):
  `repeats` prompts of `prompt_tokens` random tokens, each making `output_tokens` tokens; the
  first is a warm-up."""
  engine = DecodeEngine(model, params, 1, prefill_buckets=prefill_buckets)
  engine.warmup()
  rng = np.random.default_rng(seed)
  ttft, tpot = [], []
  for i in range(repeats + 1):
    prompt = rng.integers(0, vocab, prompt_tokens).tolist()
    c = serve(engine, [Request(i, prompt, output_tokens)])[i]
    if i:
      ttft.append(1e3 * (c.first_token_s - c.arrival_s))
      tpot.append(1e3 * (c.done_s - c.first_token_s) / (len(c.tokens) - 1))
  return {
    "engine_slots": 1,
    "prompt_tokens": int(prompt_tokens),
    "output_tokens": int(output_tokens),
    "ttft_ms": _stats(ttft),
    "tpot_ms": _stats(tpot),
    "compilations_after_warmup": engine.compilations_after_warmup,
  }


# ----------------------------------------------------------------------------------------------
# The system under test.


class _TokenSUT:
  """LoadGen's system under test: its issue call queues requests on a `Scheduler`, which one
  serving thread steps; first tokens and completions go back to LoadGen from the Scheduler's
  callbacks. A failure never escapes into LoadGen (it would wait forever): it is recorded, every
  open sample is completed empty, and `run_tokens` raises it after the run."""

  def __init__(
    self,
    engine: DecodeEngine,
    items: Sequence[WorkItem],
    mode: str,
    report_first_token: bool,
    close_on_issue: bool,
    static_wait_s: float | None,
  ):
    self.items = items
    self.report_first_token = report_first_token
    self.close_on_issue = close_on_issue
    self.times: dict[int, list] = {}  # response id -> [issued, first token, done (s), tokens]
    self.error: BaseException | None = None
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._poll_s = 0.01 if static_wait_s is None else min(0.01, max(1e-4, static_wait_s / 4))
    self.scheduler = Scheduler(
      engine,
      mode,
      on_first_token=self._first,
      on_done=self._done,
      static_wait_s=static_wait_s,
    )
    self.handle = _lg().ConstructSUT(self.issue_queries, self.flush_queries)
    self.thread = threading.Thread(target=self._serve, name="lm-loadgen-serving", daemon=True)
    self.thread.start()

  def issue_queries(self, query_samples) -> None:
    t = time.perf_counter()
    with self._lock:
      for q in query_samples:
        self.times[q.id] = [t, None, None, 0]
        if self.error is None:
          item = self.items[q.index]
          try:
            self.scheduler.add_request(Request(q.id, item.prompt, item.max_new_tokens), t)
            continue
          except BaseException as e:  # noqa: BLE001 -- re-raised by run_tokens
            self.error = e
        self._complete_empty([q.id])
      if self.close_on_issue:
        self.scheduler.close()

  def flush_queries(self) -> None:
    pass

  def _first(self, rid: int, token: int, t: float) -> None:
    self.times[rid][1] = t
    if self.report_first_token:
      lg = _lg()
      data = np.array([token], np.int32)
      lg.FirstTokenComplete([lg.QuerySampleResponse(rid, data.ctypes.data, data.nbytes)])

  def _done(self, rid: int, tokens: list, t: float) -> None:
    record = self.times[rid]
    record[2], record[3] = t, len(tokens)
    lg = _lg()
    data = np.asarray(tokens, np.int32)
    lg.QuerySamplesComplete(
      [lg.QuerySampleResponse(rid, data.ctypes.data, data.nbytes, len(tokens))]
    )

  def _serve(self) -> None:
    try:
      while True:
        if self.scheduler.step():
          continue
        if self._stop.is_set() and self.scheduler.idle:
          return
        self.scheduler.wait_for_request(self._poll_s)
    except BaseException as e:  # noqa: BLE001 -- re-raised by run_tokens
      with self._lock:
        self.error = e
        self._complete_empty([rid for rid, r in self.times.items() if r[2] is None])

  def _complete_empty(self, ids: Sequence[int]) -> None:
    """Ends samples that will not be served, so LoadGen can finish the run."""
    lg = _lg()
    for rid in ids:
      record = self.times[rid]
      if record[1] is None and self.report_first_token:
        lg.FirstTokenComplete([lg.QuerySampleResponse(rid, 0, 0)])
      record[2] = record[2] or time.perf_counter()
      lg.QuerySamplesComplete([lg.QuerySampleResponse(rid, 0, 0, 2)])

  def stop(self) -> None:
    self._stop.set()
    self.thread.join(60.0)
    if self.thread.is_alive():
      raise LoadGenRunError("the serving thread did not stop within 60 s")
    engine = self.scheduler.engine
    for slot in engine.active_slots():  # after a failure: the next run starts empty
      engine.free(slot)

  def destroy(self) -> None:
    _lg().DestroySUT(self.handle)


# ----------------------------------------------------------------------------------------------
# One LoadGen run.

# LoadGen's issue thread needs the GIL to hand a request over, and the serving thread holds it
# while it runs Python; by default Python makes a waiting thread wait up to 5 ms for it, which
# became the TTFT tail (p99 about 7 ms at a tenth of the load the engine serves).
GIL_SWITCH_INTERVAL_S = 5e-5


@contextlib.contextmanager
def _switch_interval(seconds: float) -> Iterator[None]:
  old = sys.getswitchinterval()
  sys.setswitchinterval(seconds)
  try:
    yield
  finally:
    sys.setswitchinterval(old)


@dataclasses.dataclass(frozen=True)
class TokenRunSettings:
  """How long LoadGen runs last. Server and SingleStream keep LoadGen's early-stopping floors of
  queries (662 and 64), below which a run is INVALID however fast the server; Offline serves the
  whole mix once (`offline_samples`, default every item)."""

  duration_ms: int = 2000
  single_stream_duration_ms: int = 1000
  offline_samples: int | None = None
  static_wait_s: float | None = None  # static mode: the longest a partial batch waits
  seed: int = 0


def run_tokens(
  engine: DecodeEngine,
  items: Sequence[WorkItem],
  scenario: str,
  mode: str,
  log_dir: str,
  bounds: Bounds,
  settings: TokenRunSettings = TokenRunSettings(),
  target_qps: float | None = None,
  expected_latency_ms: float | None = None,
) -> dict[str, Any]:
  """One LoadGen run of `scenario` (Server at `target_qps`, Offline, SingleStream) on `engine`
  batching in `mode`; LoadGen's logs go to `log_dir` (which must hold no earlier run's).
  Returns LoadGen's verdict and token figures, and our per-sample TTFT, TPOT and goodput."""
  if scenario not in ("Server", "Offline", "SingleStream"):
    raise ValueError(f"unknown scenario {scenario!r}")
  if scenario == "SingleStream" and mode != "continuous":
    raise ValueError("SingleStream sends one request at a time: a static batch would never fill")
  if scenario == "Server" and mode == "static" and settings.static_wait_s is None:
    raise ValueError("static batching under Poisson arrivals needs static_wait_s")
  lg = _lg()
  log_dir = os.path.abspath(log_dir)
  os.makedirs(log_dir, exist_ok=True)
  if any(n.startswith("mlperf_log_") for n in os.listdir(log_dir)):
    raise ValueError(f"{log_dir} already holds LoadGen logs; give each run its own directory")
  test = lg.TestSettings()
  test.scenario = getattr(lg.TestScenario, scenario)
  test.mode = lg.TestMode.PerformanceOnly
  test.use_token_latencies = True
  test.sample_index_rng_seed = test.schedule_rng_seed = test.qsl_rng_seed = settings.seed
  if scenario == "Server":
    if not target_qps or target_qps <= 0:
      raise ValueError("a Server run needs a target QPS > 0")
    test.server_target_qps = float(target_qps)
    test.ttft_latency = int(bounds.ttft_ms * 1e6)
    test.tpot_latency = int(bounds.tpot_ms * 1e6)
    longest = max(w.max_new_tokens for w in items)
    test.server_target_latency_ns = int((bounds.ttft_ms + (longest - 1) * bounds.tpot_ms) * 1e6)
    test.server_target_latency_percentile = 0.99
    test.server_coalesce_queries = True
    test.min_duration_ms = int(settings.duration_ms)
    test.min_query_count = EARLY_STOPPING_MIN_QUERIES["Server"]
  elif scenario == "SingleStream":
    test.single_stream_expected_latency_ns = max(1000, int((expected_latency_ms or 1.0) * 1e6))
    test.min_duration_ms = int(settings.single_stream_duration_ms)
    test.min_query_count = EARLY_STOPPING_MIN_QUERIES["SingleStream"]
  else:  # Offline: one query of the whole mix; tokens/s = tokens / the last completion
    test.offline_expected_qps = 1.0
    test.min_duration_ms = 0
    test.min_query_count = int(settings.offline_samples or len(items))
  log_settings = lg.LogSettings()
  log_settings.log_output.outdir = log_dir
  log_settings.log_output.copy_summary_to_stdout = False
  # No trace log: 1-3 MB per Server run (47 MB for one serve_lm.py); the summary and detail logs
  # hold every figure LoadGen reports.
  log_settings.enable_trace = False
  static_wait = settings.static_wait_s if mode == "static" and scenario == "Server" else None
  t0 = time.perf_counter()
  with _LOADGEN_LOCK, _switch_interval(GIL_SWITCH_INTERVAL_S):
    qsl = lg.ConstructQSL(len(items), len(items), lambda _: None, lambda _: None)
    sut = None
    try:
      sut = _TokenSUT(
        engine,
        items,
        mode,
        report_first_token=scenario != "Offline",
        close_on_issue=scenario == "Offline",
        static_wait_s=static_wait,
      )
      lg.StartTestWithLogSettings(
        sut.handle, qsl, test, log_settings, os.path.join(log_dir, "no_audit.config")
      )
    finally:
      try:
        if sut is not None:
          try:
            sut.stop()
          finally:
            sut.destroy()
      finally:
        lg.DestroyQSL(qsl)
  wall_s = time.perf_counter() - t0
  if sut.error is not None:
    if not isinstance(sut.error, Exception):
      raise sut.error
    raise LoadGenRunError(
      f"{scenario} ({mode}) run failed while serving ({type(sut.error).__name__}: "
      f"{sut.error}); LoadGen's logs are in {log_dir}"
    ) from sut.error
  record = _record(log_dir, scenario, sut.times, bounds)
  record.update(
    scenario=scenario,
    mode=mode,
    target_qps=target_qps,
    static_wait_s=static_wait,
    log_dir=log_dir,
    wall_s=wall_s,
    compilations_after_warmup=engine.compilations_after_warmup,
  )
  return record


def _ns_ms(value: Any) -> float | None:
  return None if value is None else float(value) / 1e6


def _record(log_dir: str, scenario: str, times: dict, bounds: Bounds) -> dict[str, Any]:
  """LoadGen's verdict and token percentiles (its detail log), and ours per sample."""
  result = read_summary_validity(os.path.join(log_dir, "mlperf_log_summary.txt"))
  detail = read_detail_log(os.path.join(log_dir, "mlperf_log_detail.txt"))
  loadgen = {
    "ttft_p99_ms": _ns_ms(detail.get("result_first_token_99.00_percentile_latency_ns")),
    "ttft_p50_ms": _ns_ms(detail.get("result_first_token_50.00_percentile_latency_ns")),
    "tpot_p99_ms": _ns_ms(detail.get("result_time_per_output_token_99.00_percentile_ns")),
    "tpot_p50_ms": _ns_ms(detail.get("result_time_per_output_token_50.00_percentile_ns")),
    "latency_p99_ms": _ns_ms(detail.get("result_99.00_percentile_latency_ns")),
    "tokens_per_s": detail.get(
      "result_tokens_per_second" if scenario == "Offline" else "result_completed_tokens_per_second"
    ),
    "samples_per_s": detail.get(
      {
        "Offline": "result_samples_per_second",
        "Server": "result_completed_samples_per_sec",
        "SingleStream": "result_qps_with_loadgen_overhead",
      }[scenario]
    ),
    "scheduled_samples_per_s": detail.get("result_scheduled_samples_per_sec"),
    "query_count": detail.get("result_query_count"),
    "invalid_reason": (detail.get("result_invalid_reason") or "").strip() or None,
    "early_stopping_ttft": detail.get("early_stopping_ttft_result"),
    "early_stopping_tpot": detail.get("early_stopping_tpot_result"),
    "errors": detail["errors"],
    "version": detail.get("loadgen_version"),
  }
  rows = np.array([r for r in times.values() if r[1] is not None and r[3] >= 2], np.float64)
  if rows.size:
    issued, first, done, n_tokens = rows.T
    ttft_ms = 1e3 * (first - issued)
    tpot_ms = 1e3 * (done - first) / (n_tokens - 1)
    latency_ms = 1e3 * (done - issued)
    good = (ttft_ms <= bounds.ttft_ms) & (tpot_ms <= bounds.tpot_ms)
    span = float(done.max() - issued.min())
    goodput = float(good.sum() / span) if span > 0 else None
  else:
    ttft_ms = tpot_ms = latency_ms = n_tokens = np.zeros(0)
    good, goodput = np.zeros(0, bool), None
  return {
    "result": result,
    "valid": result == "VALID",
    "loadgen": loadgen,
    # MLPerf's figures are LoadGen's; ours (timed from the SUT's issue call) give the CDFs
    "ttft_p99_ms": loadgen["ttft_p99_ms"],
    "tpot_p99_ms": loadgen["tpot_p99_ms"],
    "samples": {
      "n": int(len(ttft_ms)),
      "ttft_ms": _stats(ttft_ms),
      "tpot_ms": _stats(tpot_ms),
      "latency_ms": _stats(latency_ms),
      "within_bounds": int(good.sum()),
      "output_tokens": int(sum(r[3] for r in times.values())),
    },
    "goodput": goodput,
    "per_sample_ms": {
      "ttft": ttft_ms.tolist(),
      "tpot": tpot_ms.tolist(),
      "latency": latency_ms.tolist(),
      "tokens": [int(x) for x in n_tokens],
    },
  }


# ----------------------------------------------------------------------------------------------
# Server: the highest QPS whose p99 TTFT and p99 TPOT both meet their bounds.


def search_server_qps(
  run_at: Callable[[float], dict[str, Any]],
  start_qps: float,
  min_qps: float,
  growth: float = 2.0,
  rel_tolerance: float = 0.1,
  max_runs: int = 8,
) -> dict[str, Any]:
  """Brackets the highest VALID target QPS between a VALID and an INVALID run, then bisects
  geometrically until they are within `rel_tolerance` or `max_runs` are spent. Never runs below
  `min_qps` (a run needs 662 queries: at 1 QPS, 11 minutes): when even that is INVALID, the
  answer is 0 with `invalid_qps` = min_qps, an upper bound. Returns {'qps', 'best' (the VALID
  run's record, or None), 'trials', 'bracket'}."""
  if max_runs < 1 or growth <= 1 or min_qps <= 0:
    raise ValueError("max_runs must be >= 1, growth > 1 and min_qps > 0")
  qps = max(float(start_qps), min_qps)
  lo, hi, best, trials = 0.0, math.inf, None, []
  while len(trials) < max_runs:
    record = run_at(qps)
    trials.append(record)
    if record["valid"]:
      lo = qps
      if best is None or qps > best["target_qps"]:
        best = record
    else:
      hi = min(hi, qps)
    if math.isinf(hi):
      qps *= growth
    elif lo == 0.0:
      if qps <= min_qps:
        break
      qps = max(qps / growth, min_qps)
    elif hi / lo <= 1 + rel_tolerance:
      break
    else:
      qps = math.sqrt(lo * hi)
  return {
    "qps": lo,
    "best": best,
    "trials": trials,
    "bracket": {"valid_qps": lo, "invalid_qps": None if math.isinf(hi) else hi},
    "min_qps": float(min_qps),
  }
