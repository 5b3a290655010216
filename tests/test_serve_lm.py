"""Serving a language model by the MLPerf LLM rules: the request mix, LoadGen's token path, the
Server QPS search, scripts/serve_lm.py end to end on a tiny trained run, and its bad inputs."""

import functools
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.bench import lm_loadgen, lm_workload
from research.errors import UserError
from research.models.transformer import Transformer
from research.serving.decode_engine import DecodeEngine, for_serving

VOCAB, N_CTX = 32, 32
MODEL = Transformer(num_classes=VOCAB, n_layer=1, d_model=32, n_head=2, d_ff=64, n_ctx=N_CTX)


@functools.lru_cache(maxsize=None)
def _engine() -> DecodeEngine:
  params = jax.jit(MODEL.init)(jax.random.key(0), jnp.zeros((1, N_CTX), jnp.int32))
  engine = DecodeEngine(for_serving(MODEL), params, 4, prefill_buckets=(8,))
  engine.warmup()
  return engine


def test_the_mix_is_seeded_log_uniform_and_fits_the_context():
  spec = lm_workload.default_spec(128, count=2000, seed=3)
  assert spec.prompt_tokens == (4, 32) and spec.output_tokens == (8, 64)
  items = lm_workload.make_requests(spec, VOCAB)
  assert items == lm_workload.make_requests(spec, VOCAB)  # seeded
  out = np.array([w.max_new_tokens for w in items])
  assert out.min() == 8 and out.max() == 64  # the whole range, 8x apart
  # log-uniform: each doubling about equally common
  counts = [np.sum((out >= lo) & (out < 2 * lo)) for lo in (8, 16, 32)]
  assert max(counts) < 1.3 * min(counts)
  assert all(len(w.prompt) + w.max_new_tokens <= 128 for w in items)
  d = lm_workload.describe(spec, items, None)
  assert d["distribution"] == "log-uniform" and d["output_spread"] == 8.0


@pytest.mark.parametrize(
  "prompt, output, words",
  [
    ((1, 8), (0, 16), ("--output-tokens 0,16", "at least 2")),
    ((1, 8), (8, 16), ("vary at least 4x", "raise MAX to 32")),
    ((4, 24), (4, 16), ("n_ctx=32", "MAX + MAX <= 32")),
  ],
)
def test_a_mix_the_model_cannot_serve_is_one_line_naming_the_flag(prompt, output, words):
  spec = lm_workload.WorkloadSpec(prompt, output)
  with pytest.raises(UserError) as e:
    lm_workload.check_spec(spec, N_CTX)
  assert "\n" not in str(e.value) and all(w in str(e.value) for w in words)


def test_loadgen_token_path_reports_ttft_and_tpot_for_every_sample(tmp_path):
  engine = _engine()
  items = lm_workload.make_requests(lm_workload.WorkloadSpec((1, 8), (2, 16), 64), VOCAB)
  bounds = lm_loadgen.Bounds(50.0, 5.0, "server", {"ttft": False, "tpot": False}, "given")
  settings = lm_loadgen.TokenRunSettings(duration_ms=0, single_stream_duration_ms=0)
  r = lm_loadgen.run_tokens(
    engine, items, "Server", "continuous", str(tmp_path / "server"), bounds, settings,
    target_qps=800.0,
  )  # fmt: skip
  lg, s = r["loadgen"], r["per_sample_ms"]
  assert lg["errors"] == []  # every first token came before its sample's end, n_tokens > 1
  assert lg["query_count"] == len(s["ttft"]) >= 662  # the early-stopping floor
  assert lg["ttft_p99_ms"] > 0 and lg["tpot_p99_ms"] > 0
  assert set(s["tokens"]) <= {w.max_new_tokens for w in items}
  ttft, tpot, latency, n = (np.array(s[k]) for k in ("ttft", "tpot", "latency", "tokens"))
  np.testing.assert_allclose(tpot, (latency - ttft) / (n - 1), rtol=1e-9)  # the MLPerf formula
  # LoadGen times from its own schedule, we from our issue call: TPOT's ends are the same events
  assert lg["tpot_p50_ms"] == pytest.approx(np.percentile(tpot, 50), rel=0.25, abs=0.05)
  assert r["compilations_after_warmup"] == 0
  assert os.path.isfile(tmp_path / "server" / "mlperf_log_detail.txt")
  off = lm_loadgen.run_tokens(
    engine, items, "Offline", "static", str(tmp_path / "offline"), bounds, settings
  )
  assert off["valid"] and off["loadgen"]["tokens_per_s"] > 0
  assert off["samples"]["output_tokens"] == sum(w.max_new_tokens for w in items)


def _fake_runs(capacity: float):
  calls = []

  def run_at(qps):
    calls.append(qps)
    return {"valid": qps <= capacity, "target_qps": qps}

  return run_at, calls


def test_the_qps_search_returns_a_valid_qps_and_an_invalid_one_just_above():
  run_at, calls = _fake_runs(37.0)
  s = lm_loadgen.search_server_qps(run_at, start_qps=10, min_qps=1, rel_tolerance=0.05)
  lo, hi = s["bracket"]["valid_qps"], s["bracket"]["invalid_qps"]
  assert s["qps"] == lo <= 37 < hi <= 1.05 * lo and s["best"]["target_qps"] == lo
  assert calls[:3] == [10, 20, 40]  # doubles until INVALID, then bisects
  none_valid, calls = _fake_runs(0.5)
  s = lm_loadgen.search_server_qps(none_valid, start_qps=16, min_qps=2)
  assert s["qps"] == 0 and s["best"] is None and s["bracket"]["invalid_qps"] == 2
  assert calls == [16, 8, 4, 2]  # never below the floor


def test_bounds_scale_mlperfs_ratios_and_refuse_what_no_load_meets():
  unloaded = {"ttft_ms": {"p50": 0.2}, "tpot_ms": {"p50": 0.1}}
  b = lm_loadgen.derive_bounds(unloaded, "server")
  assert b.ttft_ms == pytest.approx(0.2 * 2000 / 65) and b.tpot_ms == pytest.approx(0.1 * 200 / 5.2)
  i = lm_loadgen.derive_bounds(unloaded, "interactive", tpot_ms=3.0)
  assert i.ttft_ms == pytest.approx(0.2 * 450 / 65) and i.tpot_ms == 3.0
  assert i.derived == {"ttft": True, "tpot": False} and "given" in i.how
  with pytest.raises(UserError, match="no load can meet it; give at least 0.200 ms"):
    lm_loadgen.check_reachable(lm_loadgen.derive_bounds(unloaded, ttft_ms=0.05), unloaded)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
  from research.config import load_config
  from research.training.loop import train_and_evaluate

  config = load_config("experiments/lm_markov_tiny.py:tiny", ["num_steps=10", "num_devices=1"])
  workdir = str(tmp_path_factory.mktemp("serve") / "run")
  train_and_evaluate(config, workdir, progress=False)
  return workdir


@pytest.fixture(scope="module")
def served(lm_run, script_here_module, tmp_path_factory):
  """One --quick serve_lm.py run (4 slots, 64 requests) the report's tests share: (out, exit
  status, stdout, stderr, serve.json or None)."""
  out = tmp_path_factory.mktemp("served") / "serving"
  args = ("--threads", "0", "--workdir", lm_run, "--out", out, "--quick", "--slots", "4",
          "--prefill-batch", "2", "--requests", "64")  # fmt: skip
  code, stdout, stderr = script_here_module("serve_lm.py", *args)
  r = json.loads((out / "serve.json").read_text()) if code == 0 else None
  return out, code, stdout, stderr, r


def test_serve_lm_quick_writes_the_report_and_the_trial_metrics(lm_run, served):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  out, code, stdout, stderr, r = served
  assert code == 0, stderr[-3000:]
  assert "[serve_lm]" in stderr and "Server QPS" in stdout
  for mode in ("static", "continuous"):
    server = r["modes"][mode]["server"]
    assert {"qps", "ttft_p99_ms", "tpot_p99_ms", "goodput", "valid"} <= set(server)
    assert r["modes"][mode]["offline"]["tokens_per_s"] > 0
  assert r["modes"]["continuous"]["server"]["valid"]
  assert r["compilations_after_warmup"] == 0
  assert r["kv_cache"]["bytes_per_token"] == 1 * 2 * 32 * 4  # layers x (k, v) x d_model x f32
  assert r["workload"]["output_spread"] >= 4 and r["provenance"]["command"]
  assert [p["batch"] for p in r["decode_sweep"]] == [1, 4]
  for point in r["decode_sweep"]:
    assert point["tokens_per_s"] > 0 and 0 < point["mfu"] and 0 < point["roofline_fraction"]
  assert r["bounds"]["ttft_ms"] > r["unloaded"]["ttft_ms"]["p50"]
  assert glob.glob(str(out / "loadgen" / "continuous" / "Server" / "*" / "mlperf_log_detail.txt"))
  assert all(os.path.isfile(f) for f in r["figures"]) and (out / "roofline.pdf").is_file()
  assert "## Bounds" in (out / "serve.md").read_text()
  acc = EventAccumulator(os.path.join(lm_run, "summary"), size_guidance={"scalars": 0})
  acc.Reload()
  tags = acc.Tags()["scalars"]
  assert "trial/tokens_server_qps_continuous" in tags and "trial/tokens_ttft_bound_ms" in tags
  value = acc.Scalars("trial/tokens_server_qps_continuous")[0].value
  assert value == pytest.approx(r["modes"]["continuous"]["server"]["qps"])
  ratio = r["continuous_over_static"]["server_qps_loose"]
  if ratio is not None:
    assert acc.Scalars("trial/tokens_server_qps_ratio_loose")[0].value == pytest.approx(ratio)


def test_the_loose_comparison_gives_a_finite_ratio_from_its_own_numbers(served):
  out, code, _, stderr, r = served
  assert code == 0, stderr[-3000:]
  lb, b = r["loose_bounds"], r["bounds"]
  k = lb["factor"]
  assert k >= 1 and k & (k - 1) == 0 and lb["factors_tried"][-1] == k  # a power of two
  assert lb["ttft_ms"] == pytest.approx(k * b["ttft_ms"])  # MLPerf's proportion kept
  assert lb["tpot_ms"] == pytest.approx(k * b["tpot_ms"])
  cont, static = (r["modes"][m]["server_loose"] for m in ("continuous", "static"))
  for s in (cont, static):
    assert {"qps", "ttft_p99_ms", "tpot_p99_ms", "goodput", "valid", "bounds"} <= set(s)
    assert s["bounds"]["ttft_ms"] == lb["ttft_ms"] and s["factor"] == k
    assert s["valid"] == (s["qps"] > 0)
    for t in (t for t in s["trials"] if t["valid"]):  # VALID at the loose bounds, not others
      assert t["ttft_p99_ms"] <= lb["ttft_ms"] and t["tpot_p99_ms"] <= lb["tpot_ms"]
  assert static["valid"], stderr[-3000:]  # k doubles until static meets the bounds
  ratio = r["continuous_over_static"]["server_qps_loose"]
  assert ratio is not None and np.isfinite(ratio)
  assert ratio == pytest.approx(cont["qps"] / static["qps"])
  text = (out / "serve.md").read_text()
  assert "## Server at loose bounds both modes can meet" in text and f"{ratio:.2f}x" in text
  assert (out / "load_loose.png").is_file()


def test_the_loose_factor_is_the_smallest_power_of_two_over_twice_statics_p99():
  b = lm_loadgen.Bounds(10.0, 2.0, "server", {"ttft": True, "tpot": True}, "scaled")
  assert lm_loadgen.loose_factor(b, {"ttft": 4.0, "tpot": 0.5}) == 1  # 2x p99 within: as is
  assert lm_loadgen.loose_factor(b, {"ttft": 29.4, "tpot": 0.9}) == 8  # 58.8 ms: 80 >= it
  assert lm_loadgen.loose_factor(b, {"ttft": 5.0, "tpot": 4.5}) == 8  # TPOT binds: 9 ms -> 16
  assert lm_loadgen.loose_factor(b, {"ttft": None, "tpot": None}) == 1
  s = lm_loadgen.scaled_bounds(b, 4, "why")
  assert (s.ttft_ms, s.tpot_ms, s.tier) == (40.0, 8.0, "server") and "4x" in s.how


@pytest.mark.parametrize(
  "name, flags, words",
  [
    ("beyond the context", ("--output-tokens", "8,32"), ("n_ctx=32",)),
    ("zero new tokens", ("--output-tokens", "0,16"), ("at least 2",)),
    ("token outside the vocabulary", ("--prompts", "{tmp}/p.json"), ("vocabulary", "[0, 32)")),
    ("slots beyond the memory budget", ("--slots", "64", "--memory-budget-mb", "0.2"),
     ("--slots 64", "--memory-budget-mb")),
    ("bounds no load can meet", ("--ttft-bound-ms", "0.000001"), ("no load can meet",)),
    ("out onto the run's files", ("--out", "{run}/checkpoints"), ("checkpoints",)),
    ("out is the run itself", ("--out", "{run}"), ("the run",)),
  ],
)  # fmt: skip
def test_bad_input_is_one_line_and_leaves_nothing(lm_run, script_here, tmp_path, name, flags,
                                                  words):  # fmt: skip
  (tmp_path / "p.json").write_text(json.dumps([[1, 2], [3, 99]]))
  flags = [f.replace("{tmp}", str(tmp_path)).replace("{run}", lm_run) for f in flags]
  before = sorted(os.listdir(lm_run))
  base = ["--threads", "0", "--workdir", lm_run, "--out", str(tmp_path / "o"), "--quick"]
  code, _, stderr = script_here("serve_lm.py", *base, *flags)
  lines = stderr.strip().splitlines()
  assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), stderr
  assert all(w in lines[0] for w in words), lines[0]
  assert not (tmp_path / "o").exists() and sorted(os.listdir(lm_run)) == before


def test_a_classifier_run_is_refused(tmp_path, script_here):
  from research.config import load_config, save_config

  run = tmp_path / "cnn"
  run.mkdir()
  save_config(load_config("experiments/mnist1d_cnn.py"), str(run / "config.json"))
  args = ("--threads", "0", "--workdir", run, "--out", tmp_path / "o")
  code, _, stderr = script_here("serve_lm.py", *args)
  assert code == 1 and stderr.startswith("error: ") and "classifier run" in stderr
  assert not (tmp_path / "o").exists()
