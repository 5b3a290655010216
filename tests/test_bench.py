"""Inference timing harness: blocking timers, the saturation rule, sweeps, figures, the script."""

import glob
import gzip
import json
import os
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from research.bench import figures
from research.bench.latency import batch_sweep, realtime_latency, saturation_batch_size
from research.bench.timing import time_calls
from research.models import build_model
from research.serving.predictor import Predictor

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def predictor():
  model = build_model(
    {"name": "cnn1d", "channels": 25, "conv_impl": "im2col", "dtype": "float32"}, 10
  )
  params = model.init(jax.random.key(0), jnp.zeros((1, 40)))
  return Predictor(model, params, (40,), batch_sizes=(1, 4, 16))


def test_time_calls_counts_each_call_and_its_full_duration():
  calls = []
  samples = time_calls(lambda: (calls.append(1), time.sleep(0.002)), n_calls=5, warmup=2)
  assert len(calls) == 7 and samples.shape == (5,)
  assert samples.min() >= 0.002


def test_saturation_is_the_smallest_batch_near_the_best_throughput():
  records = [
    {"batch_size": b, "examples_per_s": t}
    for b, t in [(1, 10), (2, 50), (4, 91), (8, 100), (16, 95)]
  ]
  assert saturation_batch_size(records, 0.9) == 4
  assert saturation_batch_size(records, 0.95) == 8
  rising = [{"batch_size": b, "examples_per_s": b * 10.0} for b in (1, 2, 4, 8)]
  assert saturation_batch_size(rising, 0.9) == 8  # the best is the largest size
  with pytest.raises(ValueError):
    saturation_batch_size([])


def test_realtime_latency_reports_serving_and_floor(predictor):
  x = np.random.default_rng(0).standard_normal((1, 40)).astype(np.float32)
  r = realtime_latency(predictor, x, n_calls=200, blocks=4)
  for side in ("serving", "floor", "compute"):
    assert r[side]["n"] == 200 and 0 < r[side]["p50_us"] <= r[side]["p99_us"]
    assert len(r["samples_us"][side]) == 200
  assert r["serving_over_floor_p50"] == pytest.approx(r["serving"]["p50_us"] / r["floor"]["p50_us"])
  assert predictor.compile_count == 3


def test_batch_sweep_covers_each_compiled_size(predictor):
  records = batch_sweep(predictor, seconds_per_size=0.02)
  assert [r["batch_size"] for r in records] == [1, 4, 16]
  for r in records:
    assert r["examples_per_s"] == pytest.approx(r["batch_size"] / r["call_p50_us"] * 1e6)
    assert r["us_per_example"] * r["batch_size"] == pytest.approx(r["call_p50_us"])
  with pytest.raises(ValueError, match="not compiled"):
    batch_sweep(predictor, batch_sizes=(2,))


def test_figures_are_png_files(tmp_path):
  rng = np.random.default_rng(0)
  a = figures.plot_latency_distribution(
    {"serving": rng.uniform(20, 40, 100), "floor": rng.uniform(15, 30, 100)},
    str(tmp_path / "lat.png"),
  )
  records = [
    {"batch_size": b, "examples_per_s": 100.0 * b, "us_per_example": 1e4 / b} for b in (1, 2, 4)
  ]
  b = figures.plot_batch_sweep({"cpu float32": records}, str(tmp_path / "sweep.png"))
  for path in (a, b):
    data = open(path, "rb").read()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000


@pytest.mark.slow
def test_bench_inference_script_writes_everything(repo_root, tmp_path, tiny_cnn_run):
  workdir = str(tmp_path / "run")
  shutil.copytree(tiny_cnn_run[0], workdir)  # the script writes its report into the run
  out = str(tmp_path / "bench")

  def bench(*flags):
    return subprocess.run(
      [sys.executable, "scripts/bench_inference.py", "--workdir", workdir, "--out", out, *flags],
      cwd=repo_root,
      env={**os.environ, "PYTHONPATH": repo_root},
      capture_output=True,
      text=True,
      timeout=300,
    )

  result = bench(
    *["--precisions", "float32,int8", "--engines", "jax,onnxruntime", "--max-batch", "8"],
    *["--latency-calls", "50", "--loadgen-ms", "200", "--server-runs", "2", "--profile"],
  )
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.load(open(os.path.join(out, "bench.json")))
  kinds = [(r["engine"], r["kind"], r["precision"]) for r in report["records"]]
  assert (
    kinds.count(("jax", "batch", "float32")) == 4 and kinds.count(("jax", "batch", "int8")) == 4
  )
  assert ("jax", "realtime", "int8") in kinds and ("jax", "loadgen", "int8") not in kinds
  assert kinds.count(("onnxruntime", "batch", "float32")) == 4
  assert ("onnxruntime", "realtime", "float32") in kinds
  ort_accuracy = next(
    r for r in report["records"] if r["kind"] == "accuracy" and r["engine"] == "onnxruntime"
  )
  agreement = ort_accuracy["agreement_with_jax_fp32"]
  assert agreement["predictions_identical"] and agreement["max_abs_logit_difference"] < 1e-4
  assert ort_accuracy["model_bytes"] > 20_000  # the weights travel inside the file
  interleaved = {r["engine"] for r in report["records"] if r["kind"] == "realtime_interleaved"}
  assert interleaved == {"jax", "onnxruntime"}  # one pass over every configuration
  scenarios = {
    r["scenario"]: r for r in report["records"] if r["kind"] == "loadgen" and r["engine"] == "jax"
  }
  assert set(scenarios) == {
    "SingleStream",
    "MultiStream",
    "Offline",
    "Server_batched",
    "Server_batch1",
  }
  for name in ("SingleStream", "MultiStream", "Offline"):
    assert scenarios[name]["valid"], scenarios[name].get("invalid_reason")
    for engine in ("jax", "onnxruntime"):
      summary = os.path.join(out, "loadgen", engine, "cpu", name, "mlperf_log_summary.txt")
      assert os.path.isfile(summary)
  assert report["provenance"]["commit"] and "bench_inference.py" in report["provenance"]["command"]
  md = open(os.path.join(out, "bench.md")).read()
  assert "| jax | cpu | int8 |" in md and "| onnxruntime | cpu | float32 |" in md
  assert "Server_batched" in md and "fastest for real-time" in md
  for png in ("latency.png", "batch_sweep.png"):
    assert open(os.path.join(out, png), "rb").read(8) == PNG_SIGNATURE
  # TensorBoard: bench.md in the Text tab and the figures in Images, in the run's summary
  # sub-run; no single-value scalars among the training curves.
  acc = EventAccumulator(workdir, size_guidance={"scalars": 0})
  acc.Reload()
  assert not [t for t in acc.Tags()["scalars"] if t.startswith("inference/")]
  trial = EventAccumulator(os.path.join(workdir, "summary"), size_guidance={"images": 0})
  trial.Reload()
  assert {"trial/latency", "trial/batch_sweep"} <= set(trial.Tags()["images"])
  (text,) = trial.Tensors("bench")
  assert "Server_batched" in text.tensor_proto.string_val[0].decode()
  # --profile: a trace of jax inference, annotated by batch size, for the Profile tab.
  (trace,) = glob.glob(os.path.join(workdir, "plugins", "profile", "*", "*.trace.json.gz"))
  names = {e.get("name") for e in json.load(gzip.open(trace))["traceEvents"]}
  assert {"inference_batch_1", "inference_batch_256"} <= names
  # The same command again into the same OUT replaces the LoadGen logs instead of refusing.
  again = bench(
    *["--engines", "jax", "--precisions", "float32", "--max-batch", "2", "--latency-calls", "50"],
    *["--loadgen-ms", "200", "--server-runs", "1"],
  )
  assert again.returncode == 0, again.stderr[-3000:]
  assert sorted(os.listdir(os.path.join(out, "loadgen"))) == ["jax"]  # the old engines' logs went
  assert not [n for n in os.listdir(os.path.dirname(out)) if ".tmp" in n]  # no temporary left


def test_bench_inference_without_a_run_is_one_line(script_here, tmp_path):
  code, _, stderr = script_here("bench_inference.py", "--threads", "0", "--workdir", tmp_path)
  assert code == 1 and stderr.count("error:") == 1
  assert "no trained run" in stderr


def test_reports_name_the_fastest_engine_and_price_int8():
  from research.bench.inference_report import engines_section, fastest

  def recs(engine, precision, acc, p50, best, qps):
    base = {"engine": engine, "backend": "cpu", "precision": precision}
    return [
      {**base, "kind": "accuracy", "test_accuracy": acc, "model_bytes": 2048},
      {**base, "kind": "realtime", "serving": {"p50_us": p50, "p99_us": 2 * p50}},
      {**base, "kind": "saturation", "best_examples_per_s": best},
      {**base, "kind": "loadgen", "scenario": "Server_batch1", "qps": qps},
    ]

  records = (
    recs("jax", "float32", 0.93, 40.0, 4e5, 3000)
    + recs("onnxruntime", "float32", 0.93, 20.0, 2e5, 0)  # no VALID Server run
    + recs("onnxruntime-int8", "int8", 0.92, 10.0, 3e5, 2500)
  )
  records.append({"engine": "tflite", "kind": "unavailable", "reason": "no such exporter"})
  f = fastest(records)
  assert f["realtime_p50_us"]["engine"] == "onnxruntime-int8"
  assert f["batch_examples_per_s"]["engine"] == "jax"
  assert f["Server_batch1_qps"] == {
    "engine": "jax",
    "backend": "cpu",
    "precision": "float32",
    "value": 3000,
  }
  text = "\n".join(engines_section(records))
  assert "int8 (onnxruntime-int8, cpu) against onnxruntime fp32: test accuracy -1.0 points" in text
  assert "batch-1 p50 2.00x as fast, best throughput 1.50x" in text
  assert "tflite: not available for this model. no such exporter" in text


def test_a_pipe_inside_a_cell_does_not_split_the_markdown_table():
  from research.outputs import markdown_table

  table = markdown_table(["agrees", "p50"], [["1000 / 1000; max |Δlogit| 0.0e+00", "61.6"]])
  row = table.splitlines()[2]
  # Unescaped pipes delimit cells: exactly three (start, between, end).
  assert len([i for i, ch in enumerate(row) if ch == "|" and row[i - 1 : i] != "\\"]) == 3
  assert "max \\|Δlogit\\|" in row
