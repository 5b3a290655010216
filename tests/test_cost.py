"""Cost accounting: pinned analytic FLOPs, agreement with XLA, break-even, the main job's report."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from research.cost import CostError, flops, hardware, xla
from research.training.optimizers import make_optimizer
from research.training.step import create_train_state, make_train_step

# Forward FLOPs per example at the reference sizes, counted by hand:
#   logistic 2*40*10 + 10; MLP (2*40*100 + 2*100) + (2*100*100 + 3*100) + (2*100*10 + 10);
#   CNN: in-bounds taps 18*5, 10*3*25 - 25, 5*3*25 - 25 (x2 FLOPs x25 channels) + bias/ReLU,
#   + 2*125*10 + 10; GRU: 80 direction-steps of (2*1*18 + 18) + (2*6*18 + 102: biases, gates,
#   sigmoids as 3 FLOPs each), + 2*480*10 + 10.
PINNED_FORWARD = {"logistic": 810, "mlp": 30_510, "cnn1d": 61_410, "gru": 39_370}
MODELS = {
  "logistic": {"name": "logistic"},
  "mlp": {"name": "mlp"},
  "cnn1d": {"name": "cnn1d", "channels": 25, "conv_impl": "auto"},
  "gru": {"name": "gru"},
}


@pytest.mark.parametrize("name", list(MODELS))
def test_analytic_forward_flops_are_pinned(name):
  assert flops.forward_flops(MODELS[name], (40,), 10) == PINNED_FORWARD[name]
  assert flops.forward_flops(MODELS[name], (40,), 10, batch=7) == 7 * PINNED_FORWARD[name]
  layers = flops.layer_flops(MODELS[name], (40,), 10)
  assert sum(l.forward for l in layers) == PINNED_FORWARD[name]


def _train_step_for(model, x):
  """The step training runs, as the cost job passes it to `xla.xla_flops`."""
  optimizer = make_optimizer("adam", 1e-2)
  state = create_train_state(model, optimizer, x[:1], jax.random.key(0))
  return make_train_step(model, optimizer), state


def _xla_flops(model_config, input_shape, num_classes, batch, tokens=False):
  """XLA's counts on a zero batch: float inputs and one label each, or token windows whose
  targets are tokens too."""
  x = jnp.zeros((batch, *input_shape), jnp.int32 if tokens else jnp.float32)
  y = x if tokens else jnp.zeros((batch,), jnp.int32)
  return xla.xla_flops(model_config, num_classes, (x, y), _train_step_for)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_analytic_and_xla_agree_within_ten_percent(name):
  batch, num_params = 16, {"logistic": 410, "mlp": 15_210, "cnn1d": 5_210, "gru": 5_134}[name]
  forward = flops.forward_flops(MODELS[name], (40,), 10, batch)
  train = flops.train_step_flops(MODELS[name], (40,), 10, batch, num_params, "adam")
  counted = _xla_flops(MODELS[name], (40,), 10, batch)
  assert abs(counted["forward"] / forward - 1) < 0.10
  assert abs(counted["train_step"] / train - 1) < 0.10
  assert 2.0 <= train / forward <= 3.5


@pytest.mark.slow
def test_xla_counts_a_scan_body_once_which_the_cross_check_corrects():
  gru = _xla_flops({"name": "gru"}, (40,), 10, 4)
  once = xla.compiled_cost(*_gru_apply(4))["flops"]
  assert gru["forward"] > 2 * once and any("scan body once" in n for n in gru["notes"])


def _gru_apply(batch):
  import jax
  import jax.numpy as jnp

  from research.models import build_model

  model = build_model({"name": "gru"}, 10)
  x = jnp.zeros((batch, 40))
  return model.apply, model.init(jax.random.key(0), x[:1]), x


def test_break_even_arithmetic():
  assert hardware.break_even(100.0, 0.5) == 200.0
  assert hardware.break_even(0.0, 1.0) == 0.0
  with pytest.raises(CostError, match="positive"):
    hardware.break_even(1.0, 0.0)
  with pytest.raises(CostError, match="non-negative"):
    hardware.break_even(-1.0, 1.0)
  p = hardware.get_profile("h100-sxm-bf16", price_per_hour=3600.0, power_watts=100.0)
  assert hardware.energy_and_money(2.0, p) == {"joules": 200.0, "dollars": 2.0}


def test_unknown_profile_is_a_clear_error():
  with pytest.raises(CostError, match="unknown hardware profile 'tpu-v99'.*h100-sxm-bf16"):
    hardware.get_profile("tpu-v99")


def test_peak_flops_is_measured():
  """Timed to the result, not to the dispatch: a 1024 x 1024 matmul timed without blocking on it
  claims about 3e13 FLOP/s here, beyond what any CPU core does in float32 (about 3e11 with two
  AVX-512 FMA units at 5 GHz)."""
  peak = hardware.measure_peak_flops(n=1024, repeats=3)
  assert 1e8 < peak["peak_flops"] < 1e12 * os.cpu_count()


def run_job(repo_root, *args):
  env = {**os.environ, "PYTHONPATH": repo_root}
  return subprocess.run(
    [sys.executable, "scripts/train_vs_infer.py", "--no-progress", *args],
    cwd=repo_root,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


@pytest.mark.slow
def test_main_job_writes_a_full_report_on_a_tiny_run(repo_root, tmp_path):
  workdir = str(tmp_path / "cnn")
  result = run_job(
    repo_root,
    "--workdir",
    workdir,
    "--config",
    "experiments/mnist1d_cnn.py:tiny",
    "--max-batch",
    "8",
    "--latency-calls",
    "50",
    "--profiles",
    "h100-sxm-bf16",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.load(open(os.path.join(workdir, "report.json")))
  assert report["steps"] == 40 and report["params"] == 5210
  assert report["flops"]["forward_per_example"] == PINNED_FORWARD["cnn1d"]
  assert 2.0 <= report["flops"]["train_to_forward_ratio"] <= 3.5
  assert abs(report["flops"]["xla_over_analytic"]["train_step"] - 1) < 0.1
  be = report["break_even_predictions"]
  assert be["flops"] == pytest.approx(
    report["flops"]["training_run_total"] / report["flops"]["forward_per_example"]
  )
  assert be["seconds_realtime"] == pytest.approx(
    report["time"]["train_seconds"]
    / report["time"]["inference"]["realtime"]["seconds_per_prediction"]
  )
  # Every engine is timed; each scenario's figure is its fastest engine's, named.
  engines, inference = report["time"]["engines"], report["time"]["inference"]
  assert set(engines) == {"jax", "onnxruntime", "onnxruntime-int8", "iree"}
  assert all(e["available"] for e in engines.values())
  fastest = min(engines, key=lambda n: engines[n]["realtime_p50_us"])
  assert inference["realtime"]["engine"] == fastest
  assert inference["realtime"]["seconds_per_prediction"] == pytest.approx(
    engines[fastest]["realtime_p50_us"] * 1e-6
  )
  best = min(engines, key=lambda n: engines[n]["best_us_per_example"])
  assert inference["batch"]["engine"] == best
  assert abs(engines["onnxruntime"]["test_accuracy"] - engines["jax"]["test_accuracy"]) < 0.01
  # Adam: two moments per parameter, plus step counts and the injected scalars (20 bytes).
  assert report["memory"]["optimizer_state_bytes"] == 2 * report["memory"]["params_bytes"] + 20
  assert (
    report["memory"]["train_step"]["temp_bytes"] > report["memory"]["apply_batch_1"]["temp_bytes"]
  )
  # Utilization is achieved analytic FLOP/s over the measured peak; a bound on its size would be
  # a timing test (a peak measured while the machine is busy can sit below a later batch rate).
  util, peak = report["utilization"], report["utilization"]["peak"]["peak_flops"]
  assert peak > 0 and util["batch"] > 0
  assert util["batch"] == pytest.approx(
    report["flops"]["forward_per_example"]
    / report["time"]["inference"]["batch"]["seconds_per_prediction"]
    / peak
  )
  assert list(report["profiles"]) == ["h100-sxm-bf16"]
  # On the edge: a phone's module compiled (fp32 and weight-only int8), this host's kernel time
  # measured, and each device's latency projected from its peak at the host's fraction of peak.
  edge = report["edge"]
  assert edge["available"] and edge["flops_per_prediction"] == PINNED_FORWARD["cnn1d"]
  phone = edge["modules"]["aarch64"]
  assert phone["float32"]["triple"] == "aarch64-linux-android30"
  assert phone["int8"]["bytes"] < phone["float32"]["bytes"]
  assert edge["weights_bytes"]["int8"] < edge["weights_bytes"]["float32"]
  fraction = edge["host"]["fraction_of_peak"]
  kernel_us = edge["host"]["benchmark_module"]["p50_of_repetition_means_us"]
  assert fraction == pytest.approx(edge["flops_per_prediction"] / (kernel_us * 1e-6) / peak)
  for device in edge["devices"]:
    assert device["projected"]
    floor_us = edge["flops_per_prediction"] / (device["peak_gflops"] * 1e9) * 1e6
    assert device["latency_at_peak_us"] == pytest.approx(floor_us)
    assert device["latency_at_host_fraction_us"] == pytest.approx(floor_us / fraction)
  md = open(os.path.join(workdir, "report.md")).read()
  for heading in (
    "## FLOPs per example",
    "## Time per example",
    "## Memory",
    "## Utilization",
    "## Break-even",
    "### Inference engines",
    "## On the edge",
  ):
    assert heading in md
  assert f"real-time inference (batch 1, p50, serving path; {fastest})" in md
  assert open(os.path.join(workdir, "report.png"), "rb").read(4) == b"\x89PNG"
  # TensorBoard: the headline as the run's HParams metrics, the report as text and image, in the
  # summary sub-run; no single-value scalars among the training curves.
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  trial = EventAccumulator(os.path.join(workdir, "summary"), size_guidance={"scalars": 0})
  trial.Reload()
  metrics = {t: trial.Scalars(t)[-1].value for t in trial.Tags()["scalars"]}
  assert metrics["trial/break_even_flops"] == pytest.approx(be["flops"], rel=1e-6)
  assert metrics["trial/latency_realtime_us"] == pytest.approx(
    inference["realtime"]["seconds_per_prediction"] * 1e6, rel=1e-6
  )
  assert "trial/test_accuracy" in metrics  # from training, beside the report's
  assert "report" in trial.Tags()["tensors"] and "trial/report" in trial.Tags()["images"]
  assert "break-even" in result.stdout
  table = subprocess.run(
    [sys.executable, "scripts/compare_runs.py", "--format", "csv", workdir],
    cwd=repo_root,
    capture_output=True,
    text=True,
    timeout=120,
  )
  header, row = table.stdout.strip().splitlines()
  assert "break_even_realtime" in header and "tb_median_step_ms" in header
  values = dict(zip(header.split(","), next(__import__("csv").reader([row]))))
  # The table prints whole predictions: within half a unit of the report's figure.
  assert float(values["break_even_realtime"].replace(",", "")) == pytest.approx(
    be["seconds_realtime"], rel=1e-3, abs=0.5
  )


def test_main_job_errors_are_one_line(script_here, tmp_path):
  args = ["--threads", "0", "--no-progress", "--workdir", tmp_path / "x", "--profiles", "tpu-v99"]
  code, _, stderr = script_here("train_vs_infer.py", *args)
  assert code == 1 and stderr.count("error:") == 1
  assert "unknown hardware profile" in stderr
  assert not os.path.exists(tmp_path / "x")  # nothing trained, nothing written


@pytest.mark.slow
def test_the_shared_signature_counts_the_transformer_too():
  """`flops.*` and `xla.xla_flops` take a Transformer's config like any other family's."""
  from research.models import build_model, count_params
  from research.models import transformer_flops as tf

  config = {
    "name": "transformer",
    "n_layer": 1,
    "d_model": 32,
    "n_head": 2,
    "d_ff": 64,
    "n_ctx": 16,
  }
  vocab, batch = 24, 2
  shape = {**config, "num_classes": vocab}
  assert flops.forward_flops(config, (16,), vocab, batch) == tf.sequence_forward_flops(
    shape, batch, 16
  )
  num_params = tf.param_count(shape)
  model = build_model(config, vocab)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))
  assert count_params(params) == num_params
  train = flops.train_step_flops(config, (16,), vocab, batch, num_params, "adam")
  terms = tf.train_step_terms(shape, batch, 16)
  assert train == sum(terms.values()) + flops.optimizer_flops_per_param("adam") * num_params
  counted = _xla_flops(config, (16,), vocab, batch, tokens=True)
  # The classifiers' bound: at this tiny width the optimizer's per-parameter estimate weighs
  # enough to put the train step 5.5 % from XLA (0.2 % at d_model 64, tests/test_transformer.py).
  assert abs(counted["forward"] / flops.forward_flops(config, (16,), vocab, batch) - 1) < 0.10
  assert abs(counted["train_step"] / train - 1) < 0.10


def test_main_job_reuses_a_finished_run_and_says_so_once(repo_root, tmp_path, monkeypatch):
  """A finished run is reused as it stands (no training, no bar, summary untouched); a shorter
  one is resumed from its step; a different config is refused before any work."""
  from research import config as config_lib
  from research import workdir as workdir_lib
  from research.studies import train_vs_infer

  config = config_lib.load_config(
    os.path.join(repo_root, "experiments/mnist1d_cnn.py"), ["num_steps=20"]
  )
  workdir = str(tmp_path / "run")
  os.makedirs(os.path.join(workdir_lib.checkpoint_dir(workdir), "20"))
  config_lib.save_config(config, workdir_lib.path(workdir, workdir_lib.CONFIG))
  summary = {"status": "finished", "steps": 20, "final_test_accuracy": 0.5}
  with open(workdir_lib.path(workdir, workdir_lib.SUMMARY), "w") as f:
    json.dump(summary, f)
  trained = []
  monkeypatch.setattr(
    train_vs_infer, "train_and_evaluate", lambda c, w, progress: trained.append(c.num_steps)
  )
  lines = []
  assert train_vs_infer.train_or_reuse(config, workdir, True, lines.append) == summary
  assert trained == [] and lines == [
    f"mnist1d_cnn in {workdir} is finished (step 20 of 20): reusing it, no training"
  ]
  longer = config_lib.load_config(
    os.path.join(repo_root, "experiments/mnist1d_cnn.py"), ["num_steps=40"]
  )
  train_vs_infer.train_or_reuse(longer, workdir, True, lines.append)
  assert trained == [40] and lines[-1].endswith("from step 20 of 40")
  other = config_lib.load_config(
    os.path.join(repo_root, "experiments/mnist1d_cnn.py"), ["num_steps=20", "batch_size=50"]
  )
  with pytest.raises(workdir_lib.WorkdirError, match="different config"):
    train_vs_infer.train_or_reuse(other, workdir, True, lines.append)
  train_vs_infer.train_or_reuse(config, str(tmp_path / "new"), True, lines.append)
  assert trained == [40, 20] and lines[-1].startswith("training mnist1d_cnn in")
