"""MLPerf LoadGen scenarios: short runs end VALID with their own logs, batched Server serves
without compiling, predictor errors surface instead of hanging, and the Server QPS search."""

import json
import os
import threading
import time

import jax
import jax.numpy as jnp
import mlperf_loadgen  # noqa: E402,F401  (a core dependency: a missing install must fail, not skip)
import numpy as np
import pytest

from research.bench import loadgen  # noqa: E402
from research.bench.loadgen import scenarios  # noqa: E402
from research.models import build_model  # noqa: E402
from research.serving.predictor import Predictor

SHORT_MS = 300


@pytest.fixture(scope="module")
def predictor():
  model = build_model(
    {"name": "cnn1d", "channels": 25, "conv_impl": "im2col", "dtype": "float32"}, 10
  )
  params = model.init(jax.random.key(0), jnp.zeros((1, 40)))
  return Predictor(model, params, (40,), batch_sizes=(1, 8, 64))


@pytest.fixture(scope="module")
def samples():
  return np.random.default_rng(0).normal(size=(256, 40)).astype(np.float32)


def server_workers_alive():
  return [t for t in threading.enumerate() if t.name == loadgen.SERVER_WORKER_NAME]


def assert_own_logs(record, log_dir):
  assert record["log_dir"] == str(log_dir)
  names = os.listdir(log_dir)
  assert "mlperf_log_summary.txt" in names and "mlperf_log_detail.txt" in names
  with open(os.path.join(log_dir, "mlperf_log_summary.txt")) as f:
    assert f"Scenario : {record['scenario']}" in f.read()
  json.dumps(record)  # a plain, JSON-able record


@pytest.mark.parametrize("scenario", ["SingleStream", "MultiStream", "Offline"])
def test_short_runs_end_valid_with_their_own_logs(predictor, samples, tmp_path, scenario):
  log_dir = tmp_path / scenario
  short = loadgen.ScenarioSettings(duration_ms=SHORT_MS)
  record = loadgen.run_scenario(predictor, samples, scenario, str(log_dir), short)
  assert record["valid"] is True, (record["invalid_reason"], record["early_stopping"])
  assert record["scenario"] == scenario
  assert_own_logs(record, log_dir)
  assert record["headline"]["value"] > 0
  latency = record["latency_ms"]
  assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
  assert record["wall_s"] >= SHORT_MS / 1e3  # LoadGen ran at least the minimum duration
  assert record["settings"]["min_duration_ms"] == SHORT_MS
  assert record["sut"]["compiles_during_run"] == 0
  sizes = {int(k) for k in record["sut"]["batch_size_histogram"]}
  if scenario == "SingleStream":
    assert record["headline"]["name"] == "p90_latency_ms"
    assert record["headline"]["value"] == latency["p90"]
    assert sizes == {1}
    assert record["query_count"] >= loadgen.EARLY_STOPPING_MIN_QUERIES["SingleStream"]
  elif scenario == "MultiStream":
    assert record["headline"]["value"] == record["query_latency_ms"]["p99"]
    assert sizes == {8}  # each query is answered as one batch of samples_per_query
    assert record["query_count"] >= loadgen.EARLY_STOPPING_MIN_QUERIES["MultiStream"]
  else:
    assert record["headline"]["name"] == "samples_per_s"
    assert record["query_count"] == 1
    calls = {int(k): v for k, v in record["sut"]["batch_size_histogram"].items()}
    largest = predictor.batch_sizes[-1]
    assert calls.get(largest, 0) > 0  # answered in chunks of the largest size...
    assert sum(v for k, v in calls.items() if k != largest) <= 1  # ...bar one remainder
    assert set(map(int, record["sut"]["padded_size_histogram"])) <= set(predictor.batch_sizes)


def test_batched_server_batches_at_a_load_batch_one_cannot_carry(predictor, samples, tmp_path):
  one_call_s = loadgen.measure_call_seconds(predictor, samples, 1)
  target_qps = 2.0 / one_call_s  # twice what batch-1 compute alone could answer
  compiles = predictor.compile_count
  record = loadgen.run_scenario(
    predictor,
    samples,
    "Server",
    str(tmp_path / "server"),
    loadgen.ScenarioSettings(
      duration_ms=SHORT_MS, batching=True, latency_bound_ms=50, target_qps=target_qps
    ),
  )
  assert record["valid"] is True, (record["invalid_reason"], record["latency_ms"])
  assert_own_logs(record, tmp_path / "server")
  assert predictor.compile_count == compiles
  assert record["sut"]["compiles_during_run"] == 0
  sizes = {int(k): v for k, v in record["sut"]["batch_size_histogram"].items()}
  assert max(sizes) > 1 and record["sut"]["mean_batch_size"] > 1
  assert max(sizes) <= predictor.batch_sizes[-1]
  assert sum(k * v for k, v in sizes.items()) == record["query_count"]
  assert set(map(int, record["sut"]["padded_size_histogram"])) <= set(predictor.batch_sizes)
  assert record["latency_ms"]["p99"] <= 50
  assert record["scheduled_qps"] == pytest.approx(target_qps, rel=0.2)
  assert record["settings"]["batching"] is True
  assert not server_workers_alive()


def test_batch_one_server_answers_one_sample_per_call(predictor, samples, tmp_path):
  record = loadgen.run_scenario(
    predictor,
    samples,
    "Server",
    str(tmp_path / "server1"),
    loadgen.ScenarioSettings(
      duration_ms=SHORT_MS, batching=False, latency_bound_ms=50, target_qps=3000
    ),
  )
  assert record["valid"] is True, (record["invalid_reason"], record["latency_ms"])
  assert record["sut"]["batch_size_histogram"] == {"1": record["query_count"]}
  assert record["query_count"] >= loadgen.EARLY_STOPPING_MIN_QUERIES["Server"]
  assert not server_workers_alive()


class FailingPredictor:
  """The real predictor, except that its `fail_on`-th `logits` call raises."""

  def __init__(self, predictor, fail_on):
    self.predictor, self.fail_on, self.calls = predictor, fail_on, 0

  def __getattr__(self, name):
    return getattr(self.predictor, name)

  def logits(self, x):
    self.calls += 1
    if self.calls >= self.fail_on:
      raise FloatingPointError("injected failure")
    return self.predictor.logits(x)


@pytest.mark.parametrize("scenario", loadgen.SCENARIOS)
def test_a_predictor_error_surfaces_instead_of_hanging(predictor, samples, tmp_path, scenario):
  failing = FailingPredictor(predictor, fail_on=3)
  outcome = {}

  def run():  # in a thread, so that a hang fails the test instead of stalling the suite
    try:
      loadgen.run_scenario(
        failing,
        samples,
        scenario,
        str(tmp_path / scenario),
        loadgen.ScenarioSettings(
          duration_ms=SHORT_MS, expected_latency_ms=0.05, expected_qps=1e5, target_qps=2000
        ),
      )
    except BaseException as e:  # noqa: BLE001
      outcome["error"] = e

  thread = threading.Thread(target=run, daemon=True)
  start = time.perf_counter()
  thread.start()
  thread.join(60)
  assert not thread.is_alive(), f"{scenario} run hung after the predictor raised"
  assert isinstance(outcome.get("error"), loadgen.LoadGenRunError), outcome
  assert isinstance(outcome["error"].__cause__, FloatingPointError)
  assert "injected failure" in str(outcome["error"])
  assert failing.calls >= 3
  assert time.perf_counter() - start < 30
  assert not server_workers_alive()


def test_each_run_needs_its_own_log_dir(predictor, samples, tmp_path):
  short = loadgen.ScenarioSettings(duration_ms=50, min_query_count=64)
  loadgen.run_scenario(predictor, samples, "SingleStream", str(tmp_path), short)
  with pytest.raises(ValueError, match="own directory"):
    loadgen.run_scenario(predictor, samples, "SingleStream", str(tmp_path), short)


def test_settings_short_by_default_full_length_from_loadgen():
  short = loadgen.make_test_settings("Server")
  assert short.min_duration_ms == loadgen.DEFAULT_DURATION_MS
  assert short.min_query_count == loadgen.EARLY_STOPPING_MIN_QUERIES["Server"]
  full = loadgen.make_test_settings("MultiStream", loadgen.ScenarioSettings(full_length=True))
  assert full.min_duration_ms == 600_000  # MLPerf's 10 minutes, from LoadGen's mlperf.conf
  assert full.min_query_count == 662
  explicit = loadgen.make_test_settings(
    "MultiStream", loadgen.ScenarioSettings(full_length=True, duration_ms=1234)
  )
  assert explicit.min_duration_ms == 1234
  with pytest.raises(ValueError, match="unknown scenario"):
    loadgen.make_test_settings("Batch")
  with pytest.raises(ValueError, match="unknown mode"):
    loadgen.make_test_settings("Offline", loadgen.ScenarioSettings(mode="timing"))


def test_accuracy_mode_logs_the_real_logits(predictor, samples, tmp_path):
  labels = predictor.predict(samples)
  labels[:32] = (labels[:32] + 1) % 10  # 32 of 256 wrong on purpose
  accuracy = loadgen.ScenarioSettings(mode="accuracy")
  record = loadgen.run_scenario(predictor, samples, "Offline", str(tmp_path), accuracy, labels)
  assert record["samples_logged"] == len(samples)
  assert record["top1_accuracy"] == pytest.approx(1 - 32 / 256)


def test_find_server_qps_returns_a_valid_run(predictor, samples, tmp_path):
  result = loadgen.find_server_qps(
    predictor,
    samples,
    str(tmp_path),
    loadgen.ScenarioSettings(latency_bound_ms=50, batching=True, duration_ms=200),
    loadgen.ServerSearch(start_qps=2000, max_runs=3),
  )
  best = result["best"]
  assert result["qps"] > 0 and best is not None and best["valid"] is True
  assert best["settings"]["target_qps"] == result["qps"]
  assert best["latency_ms"]["p99"] <= 50
  assert 1 <= len(result["trials"]) <= 3
  assert max(t["target_qps"] for t in result["trials"] if t["valid"]) == result["qps"]
  log_dirs = [t["log_dir"] for t in result["trials"]]
  assert len(set(log_dirs)) == len(log_dirs)
  for log_dir in log_dirs:
    assert os.path.isfile(os.path.join(log_dir, "mlperf_log_summary.txt"))
  json.dumps(result)


def test_find_server_qps_brackets_then_bisects(predictor, samples, tmp_path, monkeypatch):
  """The search logic alone, against a fake Server that is VALID up to 5000 QPS."""
  runs, bounds = [], set()

  def fake_run(predictor, samples, scenario, log_dir, settings):
    target_qps = settings.target_qps
    runs.append(target_qps)
    bounds.add((scenario, settings.latency_bound_ms, settings.batching))
    valid = target_qps <= 5000
    return {
      "valid": valid,
      "latency_ms": {"p99": 1.0 if valid else 99.0},
      "samples_per_s": target_qps if valid else 0.5 * target_qps,  # overloaded
      "scheduled_qps": target_qps,
      "sut": {"mean_batch_size": 1.0},
      "invalid_reason": None if valid else "Reduce target QPS",
      "wall_s": 0.0,
      "settings": {"target_qps": target_qps},
    }

  monkeypatch.setattr(scenarios, "run_scenario", fake_run)  # where find_server_qps looks
  result = loadgen.find_server_qps(
    predictor,
    samples,
    str(tmp_path),
    loadgen.ScenarioSettings(latency_bound_ms=25, batching=False),
    loadgen.ServerSearch(start_qps=40000, max_runs=20, rel_tolerance=0.05),
  )
  assert bounds == {("Server", 25, False)}  # every trial runs with the settings given
  assert runs[:4] == [40000, 20000, 10000, 5000]  # shrinks until VALID
  assert 5000 / 1.05 <= result["qps"] <= 5000
  assert result["bracket"]["invalid_qps"] / result["bracket"]["valid_qps"] <= 1.05
  assert result["best"]["settings"]["target_qps"] == result["qps"]
  grown = loadgen.find_server_qps(
    predictor, samples, str(tmp_path / "g"), search=loadgen.ServerSearch(start_qps=1000, max_runs=4)
  )
  assert [t["target_qps"] for t in grown["trials"]] == [1000, 2000, 4000, 8000]
  assert grown["qps"] == 4000 and grown["bracket"]["invalid_qps"] == 8000


def test_find_server_qps_retries_a_marginal_invalid_once(predictor, samples, tmp_path, monkeypatch):
  """A run that kept up but failed its tail once (a stall) does not cap the search."""
  runs = []

  def fake_run(predictor, samples, scenario, log_dir, settings):
    target_qps = settings.target_qps
    runs.append(target_qps)
    valid = target_qps <= 5000 and not (target_qps == 2000 and runs.count(2000) == 1)
    return {
      "valid": valid,
      "latency_ms": {"p99": 1.0 if valid else 20.0},
      "samples_per_s": target_qps,
      "scheduled_qps": target_qps,  # kept up: marginal
      "sut": {"mean_batch_size": 1.0},
      "invalid_reason": None,
      "wall_s": 0.0,
      "settings": {"target_qps": target_qps},
    }

  monkeypatch.setattr(scenarios, "run_scenario", fake_run)  # where find_server_qps looks
  search = loadgen.ServerSearch(start_qps=1000, max_runs=20)
  result = loadgen.find_server_qps(predictor, samples, str(tmp_path), search=search)
  assert runs[:3] == [1000, 2000, 2000]  # the stalled run is repeated, and passes
  assert result["trials"][2]["retry"] is True
  assert 5000 / 1.05 <= result["qps"] <= 5000
  runs.clear()
  no_retry = loadgen.find_server_qps(
    predictor,
    samples,
    str(tmp_path / "n"),
    search=loadgen.ServerSearch(start_qps=1000, max_runs=20, retry_marginal=False),
  )
  assert no_retry["qps"] < 2000  # without the retry, one stall caps the answer
