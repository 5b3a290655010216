"""Exported artifacts and the inference engines: round trips, agreement, int8, clear errors."""

import json
import os
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.models import build_model
from research.serving import InferenceError
from research.serving.engines import EngineFactory, check_engines
from research.serving.export import (
  ExportError,
  export_onnx,
  export_stablehlo,
  load_stablehlo,
)
from research.serving.onnx_passes import fold_gemm_bias
from research.serving.onnx_runtime import OnnxRuntimeEngine
from research.serving.restore import load_run

# int8 may cost this much test accuracy against fp32 (percentage points) on the MNIST-1D CNN.
INT8_ACCURACY_TOLERANCE = 0.03


def _tiny(name: str):
  config = {
    "cnn": {"name": "cnn1d", "channels": 8, "dtype": "float32"},
    "gru": {"name": "gru", "hidden": 8, "dtype": "float32"},
  }[name]
  model = build_model(config, 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 40)))
  x = np.random.default_rng(0).standard_normal((33, 40)).astype(np.float32)
  return model, params, x


@pytest.fixture(scope="module")
def trained_cnn(trained_cnn_run):
  """A briefly trained MNIST-1D CNN (accuracy well above chance, so int8 has something to lose)."""
  return trained_cnn_run[0]


def _run_alone(tmp_path, code: str, model_file, x: np.ndarray) -> np.ndarray:
  """Runs `code` in a fresh Python that cannot import this repo (no PYTHONPATH, another working
  directory): argv is the model file, an .npy of `x`, and the .npy it must write."""
  np.save(tmp_path / "x.npy", x)
  out = tmp_path / "y.npy"
  result = subprocess.run(
    [sys.executable, "-c", code, str(model_file), str(tmp_path / "x.npy"), str(out)],
    cwd=str(tmp_path),
    env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  return np.load(out)


@pytest.mark.slow
def test_stablehlo_round_trip_in_a_process_without_the_model_code(tmp_path):
  model, params, x = _tiny("cnn")
  path = tmp_path / "m.stablehlo"
  path.write_bytes(export_stablehlo(model, params, (40,)))
  code = (
    "import sys, numpy as np, jax\n"
    "exp = jax.export.deserialize(bytearray(open(sys.argv[1], 'rb').read()))\n"
    "np.save(sys.argv[3], np.asarray(exp.call(np.load(sys.argv[2]))))\n"
    "assert not [m for m in sys.modules if m.startswith('research')], 'imported the repo'\n"
  )
  logits = _run_alone(tmp_path, code, path, x)
  np.testing.assert_allclose(logits, np.asarray(model.apply(params, x)), atol=1e-5)
  # The batch dimension is symbolic: another batch size runs from the same file.
  np.testing.assert_allclose(
    load_stablehlo(str(path))(x[:5]), np.asarray(model.apply(params, x[:5])), atol=1e-5
  )


@pytest.mark.slow
def test_onnx_file_answers_in_onnxruntime_alone(tmp_path):
  model, params, x = _tiny("cnn")
  path = tmp_path / "m.onnx"
  path.write_bytes(export_onnx(model, params, (40,)))
  code = (
    "import sys, numpy as np, onnxruntime as ort\n"
    "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
    "np.save(sys.argv[3], s.run(None, {'x': np.load(sys.argv[2])})[0])\n"
    "assert 'jax' not in sys.modules and 'research' not in sys.modules\n"
  )
  logits = _run_alone(tmp_path, code, path, x)
  np.testing.assert_allclose(logits, np.asarray(model.apply(params, x)), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn", "gru"])
def test_engines_agree_on_a_tiny_model(name):
  model, params, x = _tiny(name)
  run = _run(model, params)
  factory = EngineFactory(run, calibration_x=x)
  jax_logits = factory.make("jax", (1, 8)).logits(x)
  ort = factory.make("onnxruntime", (1, 8))
  np.testing.assert_allclose(ort.logits(x), jax_logits, atol=1e-4)
  assert (ort.predict(x) == jax_logits.argmax(-1)).all()
  assert ort.compile_count == 2 and ort.model_bytes > 0


def test_dense_bias_is_folded_into_the_gemm():
  import onnx

  model, params, x = _tiny("cnn")
  proto = onnx.load_from_string(export_onnx(model, params, (40,)))
  ops = [n.op_type for n in proto.graph.node]
  assert ops[-1] == "Gemm" and fold_gemm_bias(proto) == 0  # already folded, once
  gemm = proto.graph.node[-1]
  bias = next(t for t in proto.graph.initializer if t.name == gemm.input[2])
  assert list(bias.dims) == [10]


@pytest.mark.slow
def test_int8_costs_little_accuracy(trained_cnn):
  from research.data import load_dataset

  run = load_run(trained_cnn)
  data = load_dataset(run.config.data)
  factory = EngineFactory(run, calibration_x=data.x_train)
  fp32 = factory.make("onnxruntime", (512,))
  int8 = factory.make("onnxruntime-int8", (512,))
  acc = lambda e: float(np.mean(e.predict(data.x_test) == data.y_test))  # noqa: E731
  assert acc(fp32) > 0.5  # trained: something to lose
  assert abs(acc(int8) - acc(fp32)) <= INT8_ACCURACY_TOLERANCE
  assert int8.notes.startswith("static QDQ") and int8.precision == "int8"
  assert int8.model_bytes < fp32.model_bytes  # int8 weights


def test_a_model_the_exporter_cannot_handle_is_one_clear_error():
  class Eigen(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = x @ self.param("w", nn.initializers.normal(), (x.shape[-1], 3))
      return jnp.linalg.eigh(h[:, :, None] * h[:, None, :])[0]

  model = Eigen()
  params = model.init(jax.random.key(0), jnp.zeros((1, 4)))
  with pytest.raises(ExportError, match="jax2onnx cannot export Eigen: .*eigh") as e:
    export_onnx(model, params, (4,))
  assert "\n" not in str(e.value)


def test_missing_or_corrupt_model_files(tmp_path):
  with pytest.raises(ExportError, match="no onnx model file at .* scripts/export.py"):
    OnnxRuntimeEngine.from_file(str(tmp_path / "none.onnx"), (40,))
  bad = tmp_path / "bad.onnx"
  bad.write_bytes(b"not a model")
  with pytest.raises(ExportError, match="ONNX Runtime cannot load .*bad.onnx"):
    OnnxRuntimeEngine.from_file(str(bad), (40,))
  bad_hlo = tmp_path / "bad.stablehlo"
  bad_hlo.write_bytes(b"\x00" * 64)
  with pytest.raises(ExportError, match="not a serialized StableHLO export"):
    load_stablehlo(str(bad_hlo))
  (tmp_path / "empty.stablehlo").write_bytes(b"")
  with pytest.raises(ExportError, match="is empty"):
    load_stablehlo(str(tmp_path / "empty.stablehlo"))
  model, params, _ = _tiny("cnn")
  wrong = tmp_path / "wrong.onnx"
  wrong.write_bytes(export_onnx(model, params, (40,)))
  with pytest.raises(ExportError, match=r"takes inputs of shape \[n, 40\], the run \[n, 64\]"):
    OnnxRuntimeEngine.from_file(str(wrong), (64,))


@pytest.mark.parametrize("engine", ["jax", "onnxruntime"])
def test_wrong_input_shape_or_dtype_is_named_per_engine(engine):
  model, params, x = _tiny("cnn")
  e = EngineFactory(_run(model, params), calibration_x=x).make(engine, (1, 8))
  with pytest.raises(InferenceError, match=r"input shape \[2, 41\] does not match .*\[n, 40\]"):
    e.logits(np.zeros((2, 41), np.float32))
  # One flat array of the wrong length: named as given, not as the batch of one it was read as.
  with pytest.raises(InferenceError, match=r"input shape \[1000\] does not match .*\[n, 40\]"):
    e.logits(np.zeros(1000, np.float32))
  with pytest.raises(InferenceError, match="input dtype <U1 is not numeric"):
    e.logits(np.full((2, 40), "a"))
  with pytest.raises(InferenceError, match="row 1 holds NaN"):
    e.logits(np.stack([x[0], np.full(40, np.nan, np.float32)]))
  assert e.logits(x[0].astype(np.float64)).shape == (1, 10)  # one example, any float dtype


@pytest.mark.parametrize("engine", ["jax", "onnxruntime", "onnxruntime-int8"])
def test_no_engine_answers_from_non_finite_logits(engine, tiny_cnn_run):
  """F7 on every engine: finite inputs of 3e37 overflow the trained CNN. An engine whose logits
  go NaN or inf refuses, naming the rows; int8's quantized input saturates instead, and its
  answer is finite. Never a NaN probability, nor the argmax of a NaN row."""
  run = load_run(tiny_cnn_run[0])
  x = np.random.default_rng(0).normal(size=(8, 40)).astype(np.float32)
  e = EngineFactory(run, calibration_x=x).make(engine, (1, 8))
  big = x.copy()
  big[[2, 5]] = 3e37
  finite = np.isfinite(e.logits(big)).all(axis=1)  # the raw logits, unchecked
  assert finite[[0, 1, 3, 4, 6, 7]].all()
  assert engine == "onnxruntime-int8" or not finite[[2, 5]].any()  # the case under test
  for answer in (e.probabilities, e.predict):
    if finite.all():
      assert np.isfinite(answer(big)).all()
    else:
      with pytest.raises(InferenceError, match=r"for 2 of 8 input rows \(rows 2, 5, counting"):
        answer(big)


def test_logits_check_names_the_first_rows_and_how_many():
  from research.serving.engine import check_logits

  z = np.zeros((40, 3), np.float32)
  z[[3, 7, 9, 11, 20, 30, 39], 1] = np.nan
  z[39, 2] = np.inf
  with pytest.raises(
    InferenceError, match=r"for 7 of 40 input rows \(rows 3, 7, 9, 11, 20, \.\.\.,"
  ):
    check_logits(z, np.ones((40, 5)))
  big = np.full((2, 3), 3e38, np.float32)  # finite logits whose sum overflows
  assert check_logits(big, np.ones((2, 5))) is not None


def test_engine_names_are_checked():
  with pytest.raises(InferenceError, match="unknown engine.*tensorrt.*choose from: jax"):
    check_engines(["jax", "tensorrt"])
  assert check_engines(["onnxruntime", "jax", "jax"]) == ("onnxruntime", "jax")


def test_export_script_checks_and_writes_beside_the_file(script_here, trained_cnn, tmp_path):
  """In this process (tests/conftest.py); from a fresh one: tests/test_bad_inputs.py."""
  out = str(tmp_path / "model.onnx")
  args = ["export.py", "--threads", "0", "--workdir", trained_cnn, "--format", "onnx"]
  code, _, stderr = script_here(*args, "--out", out)
  assert code == 0, stderr[-2000:]
  record = json.load(open(out + ".json"))
  assert record["check_against_jitted_apply"]["predictions_identical"]
  assert record["bytes"] == os.path.getsize(out) and record["input_shape"] == [40]
  code, _, stderr = script_here(*args, "--out", tmp_path)
  lines = stderr.strip().splitlines()
  assert code == 1 and lines[-1].startswith("error: --out") and len(lines) == 1


def test_export_never_writes_over_a_runs_own_files(script_here, tiny_cnn_run, tmp_path):
  """F9: `--out RUN/config` wrote RUN/config.json (the record OUT.json) with exit 0, after which
  infer crashed and train refused the run. Refused now, in one line, before any work."""
  run = tmp_path / "run"
  shutil.copytree(tiny_cnn_run[0], run)
  before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
  args = ["export.py", "--threads", "0", "--workdir", run, "--format", "onnx"]
  for out, clobbered in (
    (run / "config", run / "config.json"),
    (run / "summary", run / "summary"),  # the TensorBoard summary directory
    (run / "checkpoints" / "model.onnx", run / "checkpoints"),
    (run / "report", run / "report.json"),
  ):
    code, stdout, stderr = script_here(*args, "--out", out)
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1 and stdout == "", stderr[-2000:]
    assert lines[0].startswith(f"error: --out {out} would ") and f" {clobbered} (" in lines[0]
    assert "choose another --out" in lines[0]
  assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # byte for byte


def _run(model, params):
  import ml_collections

  from research.serving.restore import TrainedRun

  return TrainedRun("", ml_collections.ConfigDict(), model, params, 0, (40,), 10)


def test_graph_passes_leave_the_onnx_form_of_a_hand_written_cnn():
  """Bias in the Conv, Relu next to it, no layout Transposes around the flatten, static reshapes:
  ONNX Runtime then fuses each Conv with its bias and Relu, as for a PyTorch export."""
  import onnx
  import onnxruntime as ort

  model, params, x = _tiny("cnn")
  data = export_onnx(model, params, (40,))
  graph = onnx.load_from_string(data).graph
  ops = [n.op_type for n in graph.node]
  assert "Add" not in ops and "Shape" not in ops and "Concat" not in ops
  for conv in (n for n in graph.node if n.op_type == "Conv"):
    assert len(conv.input) == 3  # the bias folded in
  assert ops[-2:] == ["Reshape", "Gemm"]
  options = ort.SessionOptions()
  options.optimized_model_filepath = str(__import__("tempfile").mkdtemp()) + "/opt.onnx"
  ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
  optimized = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
  assert optimized.count("FusedConv") == 3 and "Transpose" not in optimized
  np.testing.assert_allclose(
    ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0],
    np.asarray(model.apply(params, x)),
    atol=1e-5,
  )


@pytest.mark.slow
def test_a_loop_body_keeps_no_unused_constant_and_onnxruntime_loads_it_quietly(capfd):
  """jax2onnx leaves a scan body's constants unused in the GRU's Loop, and ONNX Runtime printed a
  coloured warning per constant on every load; the export drops them, logits unchanged."""
  import onnx
  import onnxruntime as ort

  from research.serving.onnx_passes import drop_unused_initializers

  model, params, x = _tiny("gru")
  data = export_onnx(model, params, (40,))
  proto = onnx.load_from_string(data)
  (loop,) = [n for n in proto.graph.node if n.op_type == "Loop"]
  body = loop.attribute[0].g
  read = {name for n in body.node for name in n.input}
  assert body.initializer and all(t.name in read for t in body.initializer)
  capfd.readouterr()
  session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
  assert "CleanUnusedInitializers" not in capfd.readouterr().err
  logits = session.run(None, {"x": x})[0]
  np.testing.assert_allclose(logits, np.asarray(model.apply(params, x)), atol=1e-5)
  # The pass itself: a constant nobody reads goes, in the body as in the main graph.
  body.initializer.append(onnx.numpy_helper.from_array(np.zeros(3, np.float32), "unread"))
  proto.graph.initializer.append(onnx.numpy_helper.from_array(np.ones(2, np.float32), "unread2"))
  assert drop_unused_initializers(proto) == 2 and drop_unused_initializers(proto) == 0
  again = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
  np.testing.assert_array_equal(again.run(None, {"x": x})[0], logits)


def test_params_as_constants_change_no_prediction():
  from research.serving.predictor import Predictor

  model, params, x = _tiny("cnn")
  as_args = Predictor(model, params, (40,), (1, 64), params_as_constants=False)
  as_constants = Predictor(model, params, (40,), (1, 64), params_as_constants=True)
  assert as_constants.params_as_constants and not as_args.params_as_constants
  np.testing.assert_allclose(as_constants.logits(x), as_args.logits(x), atol=1e-5)
  assert (as_constants.predict(x) == as_args.predict(x)).all()
  int8 = Predictor(model, params, (40,), (1,), precision="int8")
  assert not int8.params_as_constants  # int8 keeps its small weights as arguments


@pytest.mark.slow
def test_lm_forward_and_decode_step_export_to_onnx():
  """The Transformer LM: its forward pass (int32 tokens in) and its KV-cache decode step, looped
  in ONNX Runtime alone, give the jitted Generator's greedy tokens."""
  import onnxruntime as ort

  from research.models import init_decode_cache
  from research.serving.export import export_decode_step_onnx
  from research.serving.generate import make_generator

  config = {
    "name": "transformer",
    "n_layer": 1,
    "d_model": 16,
    "n_head": 2,
    "d_ff": 32,
    "n_ctx": 16,
    "dtype": "float32",
  }
  model = build_model(config, 11)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))
  tokens = np.random.default_rng(0).integers(0, 11, (3, 16)).astype(np.int32)
  forward = ort.InferenceSession(
    export_onnx(model, params, (16,), jnp.int32), providers=["CPUExecutionProvider"]
  )
  np.testing.assert_allclose(
    forward.run(None, {"x": tokens})[0], np.asarray(model.apply(params, tokens)), atol=1e-4
  )
  step_onnx, cache_names = export_decode_step_onnx(model, params, batch=1)
  step = ort.InferenceSession(step_onnx, providers=["CPUExecutionProvider"])
  cache = [np.asarray(c) for c in jax.tree.leaves(init_decode_cache(model, 1))]
  token, generated = tokens[:1, :1], []
  for pos in range(6):
    logits, *cache = step.run(
      None, {"token": token, "pos": np.array(pos, np.int32), **dict(zip(cache_names, cache))}
    )
    token = logits[:, -1].argmax(-1).astype(np.int32)[:, None]
    generated.append(int(token[0, 0]))
  expected = make_generator(model).generate(params, tokens[:1, :1], 6, temperature=0.0)
  assert generated == np.asarray(expected)[0, -6:].tolist()


def test_batch1_profile_times_every_variant_and_counts_ops():
  from research.bench.batch1_path import profile_batch1

  model, params, x = _tiny("cnn")
  records = {r["variant"]: r for r in profile_batch1(_run(model, params), x, blocks=1)}
  assert (
    "trivial jitted op (x + 1)" in records and "onnxruntime (compute, io-bound buffers)" in records
  )
  jax_variants = [v for v in records if v.startswith("jax:")]
  assert len(jax_variants) == 8  # 2 conv x 2 matmul kernels x params as arguments / constants
  for v in jax_variants:
    assert records[v]["n"] == 200 and records[v]["p50_us"] > 0
    if v.endswith("as arguments"):
      constants = records[v.replace("as arguments", "as constants")]
      assert constants["ops"]["executed"] <= records[v]["ops"]["executed"]
  assert records["trivial jitted op (x + 1)"]["ops"]["executed"] == 1


def test_int8_quantization_leaves_nothing_in_the_working_directory(tmp_path, monkeypatch):
  model, params, x = _tiny("gru")  # a Loop: ONNX Runtime's symbolic shape inference fails on it
  monkeypatch.chdir(tmp_path)
  engine = EngineFactory(_run(model, params), calibration_x=x).make("onnxruntime-int8", (1, 8))
  assert engine.logits(x).shape == (len(x), 10)
  assert os.listdir(tmp_path) == []
