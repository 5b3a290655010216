"""Inference: params-only restore, padded compiled batch sizes, the infer script and its errors."""

import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import checkpoint as checkpoint_lib
from research.checkpoint import CheckpointError
from research.config import load_config
from research.data.arrays import read_inputs, write_predictions
from research.data.dataset import DataError
from research.serving.predictor import InferenceError, Predictor
from research.serving.quantize import Int8Weight, dequantize, quantize_int8
from research.serving.restore import load_run
from research.workdir import WorkdirError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, trained_cnn_run):
  """A CNN trained for 200 steps (best chosen on 500 validation examples; tests/conftest.py),
  and its data as an .npz the infer script reads."""
  root = tmp_path_factory.mktemp("infer")
  workdir, summary, config = trained_cnn_run
  from research.data import load_dataset

  data = load_dataset(config.data)
  npz = str(root / "mnist1d.npz")
  np.savez(npz, x=data.x_train, y=data.y_train, x_test=data.x_test, y_test=data.y_test)
  return workdir, summary, data, npz


def run_infer(repo_root, *args):
  env = {**os.environ, "PYTHONPATH": repo_root}
  return subprocess.run(
    [sys.executable, os.path.join(repo_root, "scripts", "infer.py"), *args],
    cwd=repo_root,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )


def test_params_only_restore_never_reads_optimizer_state(trained, tmp_path, monkeypatch):
  workdir, _, _, _ = trained
  copy = str(tmp_path / "copy")
  shutil.copytree(workdir, copy)
  step_dir = os.path.join(copy, "checkpoints", "200")
  shutil.rmtree(os.path.join(step_dir, "opt_state"))  # gone: a read of it would fail
  monkeypatch.setattr(
    checkpoint_lib.Checkpointer, "restore", lambda *a, **k: pytest.fail("full restore called")
  )
  run = load_run(copy, "latest")
  reference = load_run(workdir, "latest")
  assert run.step == 200
  for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(reference.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_best_and_numbered_checkpoints_restore(trained):
  workdir, summary, _, _ = trained
  assert load_run(workdir, "best").step == summary["best_step"]
  assert load_run(workdir, 100).step == 100
  with pytest.raises(CheckpointError, match="no checkpoint at step 7"):
    load_run(workdir, 7)


def test_workdirs_without_a_run_are_clear_errors(tmp_path):
  with pytest.raises(WorkdirError, match="no trained run"):
    load_run(str(tmp_path))
  (tmp_path / "config.json").write_text(
    json.dumps(load_config("experiments/mnist1d_cnn.py").to_dict())
  )
  with pytest.raises(CheckpointError, match="no checkpoint"):
    load_run(str(tmp_path))


def count_backend_compiles():
  events = []
  jax.monitoring.register_event_duration_secs_listener(
    lambda name, *_, **__: events.append(name) if "backend_compile" in name else None
  )
  return events


def test_odd_batches_pad_to_compiled_sizes_without_compiling(trained):
  workdir, _, data, _ = trained
  run = load_run(workdir)
  predictor = Predictor.from_run(run, batch_sizes=(1, 8, 64))
  assert predictor.compile_count == 3
  compiles = count_backend_compiles()
  for n in (1, 2, 7, 8, 9, 63, 64, 65, 200):
    out = predictor.logits(data.x_test[:n])
    assert out.shape == (n, 10)
  assert predictor.padded_size(9) == 64 and predictor.padded_size(200) == 64
  assert compiles == [] and predictor.compile_count == 3


def test_predictions_identical_between_batch_sizes(trained):
  workdir, _, data, _ = trained
  predictor = Predictor.from_run(load_run(workdir), batch_sizes=(1, 8, 512))
  x = data.x_test[:300]
  whole = predictor.logits(x)
  one_by_one = np.concatenate([predictor.logits(x[i : i + 1]) for i in range(len(x))])
  by_eight = np.concatenate([predictor.logits(x[i : i + 8]) for i in range(0, len(x), 8)])
  np.testing.assert_array_equal(whole.argmax(-1), one_by_one.argmax(-1))
  np.testing.assert_array_equal(whole.argmax(-1), by_eight.argmax(-1))
  np.testing.assert_allclose(whole, one_by_one, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_infer_script_reproduces_final_test_accuracy(trained, repo_root, tmp_path):
  workdir, summary, data, npz = trained
  out = str(tmp_path / "preds.npz")
  result = run_infer(
    repo_root,
    "--workdir",
    workdir,
    "--input",
    npz,
    "--key",
    "x_test",
    "--output",
    out,
    "--probabilities",
  )
  assert result.returncode == 0, result.stderr
  with np.load(out) as f:
    predictions, probabilities = f["predictions"], f["probabilities"]
  accuracy = float(np.mean(predictions == data.y_test))
  assert accuracy == summary["final_test_accuracy"]
  assert f"accuracy {accuracy:.4f}" in result.stdout
  np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(probabilities.argmax(-1), predictions)


def infer_here(script_here, *args):
  """scripts/infer.py in this process (tests/conftest.py): (exit status, stdout, stderr). The
  script in a fresh process: test_infer_script_reproduces_final_test_accuracy."""
  return script_here("infer.py", "--threads", "0", *args)


def test_csv_in_csv_out(trained, script_here, tmp_path):
  workdir, _, data, _ = trained
  src = tmp_path / "new.csv"
  np.savetxt(
    src, data.x_test[:5], delimiter=",", header="f" + ",f".join(map(str, range(40))), comments=""
  )
  out = tmp_path / "preds.csv"
  code, _, stderr = infer_here(script_here, "--workdir", workdir, "--input", src, "--output", out)
  assert code == 0, stderr
  rows = out.read_text().splitlines()
  assert rows[0] == "prediction" and len(rows) == 6
  expected = Predictor.from_run(load_run(workdir), batch_sizes=(8,)).predict(data.x_test[:5])
  assert [int(r) for r in rows[1:]] == expected.tolist()


@pytest.mark.parametrize(
  "make_input,fragment",
  [
    (lambda d: np.zeros((3, 41), np.float32), "does not match the model's [n, 40]"),
    (lambda d: np.array([["a"] * 40]), "not numeric"),
    (lambda d: np.zeros((0, 40), np.float32), "no examples"),
    (lambda d: np.where(np.arange(40) == 3, np.nan, 0.0)[None].repeat(2, 0), "row 0 holds NaN"),
  ],
)
def test_bad_inputs_fail_with_one_line_and_write_nothing(
  trained, script_here, tmp_path, make_input, fragment
):
  workdir, _, data, _ = trained
  src, out = tmp_path / "bad.npy", tmp_path / "out.npy"
  np.save(src, make_input(data))
  code, _, stderr = infer_here(script_here, "--workdir", workdir, "--input", src, "--output", out)
  assert code == 1
  lines = [l for l in stderr.strip().splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and fragment in lines[0], stderr
  assert not out.exists()


def test_script_errors_for_missing_run_and_files(trained, script_here, tmp_path):
  workdir, _, _, npz = trained
  out = str(tmp_path / "o.npy")
  cases = [
    (["--workdir", str(tmp_path), "--input", npz, "--output", out], "no trained run"),
    (
      ["--workdir", workdir, "--input", str(tmp_path / "nope.npy"), "--output", out],
      "does not exist",
    ),
    (["--workdir", workdir, "--input", npz, "--key", "z", "--output", out], "no array 'z'"),
    (["--workdir", workdir, "--input", npz, "--output", str(tmp_path / "o.txt")], "unknown type"),
  ]
  for args, fragment in cases:
    code, _, stderr = infer_here(script_here, *args)
    assert code == 1 and fragment in stderr, (args, stderr)
    assert stderr.count("error:") == 1
  assert not os.path.exists(out)


def test_inputs_that_overflow_the_model_are_refused_naming_the_rows(
  tiny_cnn_run, script_here, tmp_path
):
  """F7: finite inputs of 3e37 gave NaN logits, written as rows of `0,nan,nan,...` with exit 0.
  The other engines (ONNX Runtime): tests/test_export.py."""
  x = np.random.default_rng(0).normal(size=(8, 40))
  x[[1, 4, 6]] = 3e37
  src, out = tmp_path / "big.csv", tmp_path / "p.csv"
  np.savetxt(src, x, delimiter=",")
  args = ["--workdir", tiny_cnn_run[0], "--input", src, "--output", out, "--batch-size", "8"]
  code, stdout, stderr = infer_here(script_here, *args, "--probabilities")
  lines = stderr.strip().splitlines()
  assert code == 1 and len(lines) == 1 and stdout == "", stderr
  assert lines[0].startswith("error: the model's logits are NaN or inf for 3 of 8 input rows")
  assert "(rows 1, 4, 6, counting from 0; inputs up to |x| = 3e+37)" in lines[0]
  assert not out.exists()
  run = load_run(tiny_cnn_run[0])
  for precision in ("bfloat16", "int8"):
    predictor = Predictor.from_run(run, batch_sizes=(8,), precision=precision)
    for answer in (predictor.probabilities, predictor.predict):
      with pytest.raises(InferenceError, match=r"3 of 8 input rows \(rows 1, 4, 6,"):
        answer(x)


def _write_csv(path, x, header="", bom=False):
  body = "".join(",".join(f"{v:.9g}" for v in row) + "\r\n" for row in x)
  path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + (header + body).encode())
  return path


def test_csv_rows_are_all_examples_with_or_without_a_bom_or_a_header(
  tiny_cnn_run, script_here, tmp_path
):
  """F8: a CSV saved with a byte-order mark (as spreadsheets write it) gave 7 predictions for 8
  rows: its first row was taken as a header, and every prediction moved by one."""
  workdir = tiny_cnn_run[0]
  x = np.random.default_rng(1).normal(size=(8, 40)).astype(np.float32)
  header = ",".join(f"x{i}" for i in range(40)) + "\r\n"
  for name, kwargs in (
    ("header", {"header": header}),
    ("bom_header", {"bom": True, "header": header}),
  ):
    np.testing.assert_array_equal(
      read_inputs(str(_write_csv(tmp_path / f"{name}.csv", x, **kwargs)))[0].astype(np.float32), x
    )
  expected = Predictor.from_run(load_run(workdir), batch_sizes=(8,)).predict(x).tolist()
  outputs = []
  for name, bom in (("plain", False), ("bom", True)):
    src, out = _write_csv(tmp_path / f"{name}.csv", x, bom=bom), tmp_path / f"{name}_p.csv"
    args = ["--workdir", workdir, "--input", src, "--output", out, "--batch-size", "8"]
    code, stdout, stderr = infer_here(script_here, *args)
    assert code == 0 and stdout.startswith("8 predictions "), (name, stdout, stderr)
    assert [int(r) for r in out.read_text().splitlines()[1:]] == expected, name
    outputs.append(out.read_bytes())
  assert outputs[0] == outputs[1]  # the same predictions, BOM or not


def test_a_csv_header_is_told_by_its_content(tmp_path):
  cases = {
    "0,1,2\n3,4,5\n": [[0, 1, 2], [3, 4, 5]],  # a header of numbers is data: nothing dropped
    "a,b,c\n3,4,5\n": [[3, 4, 5]],
    '"a","b","c"\n"3","4","5"\n': [[3, 4, 5]],  # quoted, as spreadsheets may write it
    "\ufeffnan,1,2\n3,4,5\n": [[np.nan, 1, 2], [3, 4, 5]],  # NaN is a number (refused later)
  }
  for i, (text, rows) in enumerate(cases.items()):
    (tmp_path / f"{i}.csv").write_text(text, encoding="utf-8")
    np.testing.assert_array_equal(read_inputs(str(tmp_path / f"{i}.csv"))[0], rows)
  for text, fragment in (("", "holds no rows"), ("a,b\n", "holds no rows")):
    (tmp_path / "e.csv").write_text(text)
    with pytest.raises(DataError, match=fragment):
      read_inputs(str(tmp_path / "e.csv"))
  (tmp_path / "l.csv").write_bytes(b"\xe9,b\n1,2\n")  # Latin-1
  with pytest.raises(DataError, match="is not UTF-8 text .*save it as CSV UTF-8"):
    read_inputs(str(tmp_path / "l.csv"))


def test_an_output_that_is_the_input_is_refused(tiny_cnn_run, script_here, tmp_path):
  src = _write_csv(tmp_path / "x.csv", np.ones((2, 40)))
  os.symlink(src, tmp_path / "alias.csv")
  before = src.read_bytes()
  for out in (src, tmp_path / "alias.csv", tmp_path / "sub" / ".." / "x.csv"):
    code, _, stderr = infer_here(
      script_here, "--workdir", tiny_cnn_run[0], "--input", src, "--output", out
    )
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1, stderr
    assert lines[0] == (
      f"error: --output {out} would overwrite {src}, the --input this command reads; "
      f"choose another --output"
    )
  assert src.read_bytes() == before


def test_int8_weights_are_int8_and_close():
  w = jax.random.normal(jax.random.key(1), (30, 25)) * jnp.linspace(0.1, 3, 25)
  params = {"dense": {"kernel": w, "bias": jnp.ones(25)}}
  q = quantize_int8(params)
  assert isinstance(q["dense"]["kernel"], Int8Weight)
  assert q["dense"]["kernel"].q.dtype == jnp.int8 and q["dense"]["bias"].dtype == jnp.float32
  back = dequantize(q)["dense"]["kernel"]
  scale = np.asarray(q["dense"]["kernel"].scale)
  err = np.abs(np.asarray(back) - np.asarray(w))
  assert np.all(err <= scale / 2 + 1e-6) and err.max() > 0


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_cheaper_precisions_mostly_agree_with_float32(trained, precision):
  workdir, _, data, _ = trained
  run = load_run(workdir)
  reference = Predictor.from_run(run, batch_sizes=(512,)).predict(data.x_test)
  cheaper = Predictor.from_run(run, batch_sizes=(512,), precision=precision)
  assert np.mean(cheaper.predict(data.x_test) == reference) > 0.95
  with pytest.raises(InferenceError, match="unknown precision"):
    Predictor.from_run(run, batch_sizes=(1,), precision="fp8")


def test_array_files_round_trip(tmp_path):
  preds, probs = np.array([1, 0, 2]), np.eye(3)[[1, 0, 2]] * 0.9 + 0.0333
  write_predictions(str(tmp_path / "p.npz"), preds, probs)
  with np.load(tmp_path / "p.npz") as f:
    np.testing.assert_array_equal(f["predictions"], preds)
  write_predictions(str(tmp_path / "p.npy"), preds)
  np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), preds)
  np.savez(tmp_path / "d.npz", x_test=np.ones((4, 2)), y_test=np.arange(4))
  x, y = read_inputs(str(tmp_path / "d.npz"), "x_test")
  assert x.shape == (4, 2) and y.tolist() == [0, 1, 2, 3]
  (tmp_path / "ragged.csv").write_text("1,2\n3\n")
  with pytest.raises(DataError, match="ragged"):
    read_inputs(str(tmp_path / "ragged.csv"))
  with pytest.raises(DataError, match="does not exist"):
    write_predictions(str(tmp_path / "no" / "p.npy"), preds)


@pytest.mark.parametrize(
  "experiment,overrides,task",
  [
    ("experiments/digits_cnn.py", [], "classification"),
    (
      "experiments/lm_markov_tiny.py",
      ["data.train_tokens=2000", "data.val_tokens=500", "data.n_ctx=16"],
      "language_model",
    ),
  ],
)
def test_a_configs_task_is_what_its_dataset_says(experiment, overrides, task):
  from research.data import load_dataset
  from research.data.dataset import task_of

  config = load_config(experiment, overrides)
  assert task_of(config.data) == task_of(load_dataset(config.data)) == task


def test_tools_refuse_the_other_task_in_one_line_from_the_config_alone(tmp_path, capsys):
  from research.cli import run_main
  from research.config import save_config
  from research.serving.run_kind import require_classifier, require_language_model

  for name, experiment in (("lm", "lm_markov_tiny"), ("cnn", "mnist1d_cnn")):
    os.makedirs(tmp_path / name)  # config.json only: no checkpoint, no data loaded
    save_config(load_config(f"experiments/{experiment}.py"), str(tmp_path / name / "config.json"))
  cases = [
    (require_classifier, "lm", "is a language-model run (transformer on markov); infer.py serves"),
    (require_language_model, "cnn", "is a classifier run (cnn1d on mnist1d); infer.py reports"),
  ]
  for require, name, says in cases:
    with pytest.raises(SystemExit) as e:
      run_main(functools.partial(require, str(tmp_path / name), "infer.py"))
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and err.startswith("error: "), err
    assert says in err, err
  assert require_classifier(str(tmp_path / "cnn"), "infer.py").model.name == "cnn1d"
