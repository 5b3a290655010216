"""End to end on tiny runs: training, resume after interruption, events, summary, bad input."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from research.checkpoint import Checkpointer
from research.config import ConfigError, load_config
from research.data import mnist1d as mnist1d_lib
from research.training import loop as loop_lib
from research.training import resume as resume_lib
from research.training.loop import TrainingError, train_and_evaluate
from research.training.progress import postfix
from research.workdir import WorkdirError


def tiny_config(*extra):
  """The tiny CNN (40 steps, evaluated and checkpointed every 20) that `tiny_cnn_run` trained."""
  return load_config("experiments/mnist1d_cnn.py:tiny", list(extra))


def final_params(workdir):
  with Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True) as ckpt:
    step = ckpt.latest_step()
    meta = ckpt.restore_meta(step)
    like = _abstract_params(workdir)
    return step, ckpt.restore_params(step, like), meta


def _abstract_params(workdir):
  import jax.numpy as jnp

  from research.models import build_model

  with open(os.path.join(workdir, "config.json")) as f:
    cfg = json.load(f)
  model = build_model(cfg["model"], 10)
  return model.init(jax.random.key(0), jnp.zeros((1, 40)))


def test_tiny_run_trains_and_writes_everything(tiny_cnn_run):
  workdir, summary = tiny_cnn_run
  for key in (
    "experiment",
    "model",
    "params",
    "steps",
    "final_test_accuracy",
    "best_test_accuracy",
    "final_test_loss",
    "train_seconds",
    "compile_seconds",
    "steps_per_second",
    "device",
    "jax_version",
  ):
    assert key in summary, key
  assert summary["steps"] == 40 and summary["params"] == 5210
  assert summary["final_test_accuracy"] > 0.3  # chance is 0.1; 40 Adam steps get well past it
  assert summary["train_seconds"] > 0 and summary["compile_seconds"] > 0
  on_disk = json.load(open(os.path.join(workdir, "summary.json")))
  assert on_disk["final_test_accuracy"] == summary["final_test_accuracy"]
  saved_config = json.load(open(os.path.join(workdir, "config.json")))
  assert saved_config["num_steps"] == 40 and saved_config["model"]["name"] == "cnn1d"
  step, params, meta = final_params(workdir)
  assert step == 40 and meta["step"] == 40 and meta["data_position"]["next_step"] == 40


def test_events_hold_scalars_text_and_hparams(tiny_cnn_run):
  workdir, _ = tiny_cnn_run
  acc = EventAccumulator(workdir, size_guidance={"scalars": 0, "tensors": 0})
  acc.Reload()
  scalars = acc.Tags()["scalars"]
  for tag in (
    "train/loss",
    "train/accuracy",
    "train/grad_norm",
    "train/learning_rate",
    "test/loss",
    "test/accuracy",
    "train_speed/step_time_ms",
    "train_speed/examples_per_second",
  ):
    assert tag in scalars, tag
  assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 41))  # every step
  assert [e.step for e in acc.Scalars("train_speed/step_time_ms")] == [
    10,
    20,
    30,
    40,
  ]  # every chunk
  assert [e.step for e in acc.Scalars("test/accuracy")] == [20, 40]
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert acc.Scalars("test/accuracy")[-1].value == pytest.approx(summary["final_test_accuracy"])
  # The config and the HParams trial sit in the summary sub-run (research/dashboard.py).
  trial = EventAccumulator(os.path.join(workdir, "summary"), size_guidance={"tensors": 0})
  trial.Reload()
  assert "config" in trial.Tags()["tensors"]
  assert "_hparams_/session_start_info" in trial.PluginTagToContent("hparams")


def test_resume_after_interrupt_equals_uninterrupted_run(
  tmp_path, monkeypatch, capsys, tiny_cnn_run
):
  config = tiny_config()
  straight, expected = tiny_cnn_run

  interrupted = str(tmp_path / "interrupted")
  real_save = resume_lib.save

  def save_then_die(ckpt, state, meta, step, schedule, score):
    real_save(ckpt, state, meta, step, schedule, score)
    if step == 20:
      raise KeyboardInterrupt  # killed right after the step-20 save was started

  monkeypatch.setattr(resume_lib, "save", save_then_die)
  with pytest.raises(KeyboardInterrupt):
    train_and_evaluate(config, interrupted, progress=False)
  monkeypatch.setattr(resume_lib, "save", real_save)
  with Checkpointer(os.path.join(interrupted, "checkpoints"), read_only=True) as ckpt:
    assert ckpt.all_steps() == [20]
  capsys.readouterr()
  resumed = train_and_evaluate(config, interrupted, progress=False)
  assert f"resuming {interrupted} from step 20 of 40\n" in capsys.readouterr().out
  for key in ("final_test_accuracy", "final_test_loss", "best_test_accuracy", "steps"):
    assert resumed[key] == expected[key], key
  again = train_and_evaluate(config, interrupted, progress=False)  # finished: says so, once
  said = capsys.readouterr().out
  assert said.count("finished at step 40 of 40; nothing to train") == 1, said
  assert again["final_test_loss"] == expected["final_test_loss"]
  _, p_straight, _ = final_params(straight)
  _, p_resumed, _ = final_params(interrupted)
  for a, b in zip(jax.tree.leaves(p_straight), jax.tree.leaves(p_resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path, tiny_cnn_run):
  _, a = tiny_cnn_run
  b = train_and_evaluate(tiny_config(), str(tmp_path / "b"), progress=False)
  c = train_and_evaluate(tiny_config("seed=1"), str(tmp_path / "c"), progress=False)
  assert a["final_test_loss"] == b["final_test_loss"]
  assert a["final_test_loss"] != c["final_test_loss"]


def test_latest_n_plus_best_checkpoints_are_kept(tmp_path):
  config = load_config(
    "experiments/mnist1d_logistic.py",
    [
      "num_steps=50",
      "log_every=10",
      "eval_every=10",
      "checkpoint_every=10",
      "keep_checkpoints=2",
      "data.validation_size=500",
    ],
  )
  workdir = str(tmp_path / "run")
  summary = train_and_evaluate(config, workdir, progress=False)
  with Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True) as ckpt:
    steps = ckpt.all_steps()
    best = ckpt.best_step()
  assert {40, 50} <= set(steps) and best in steps and len(steps) <= 3
  assert best == summary["best_step"]


def test_shuffled_batches_are_a_config_option(tmp_path, tiny_cnn_run):
  _, a = tiny_cnn_run
  b = train_and_evaluate(tiny_config("data.shuffle=true"), str(tmp_path / "b"), progress=False)
  assert a["final_test_loss"] != b["final_test_loss"]


@pytest.mark.slow
def test_digits_and_npz_sources_train(tmp_path):
  digits = load_config("experiments/digits_cnn.py:tiny")
  s = train_and_evaluate(digits, str(tmp_path / "digits"), progress=False)
  assert s["dataset"] == "digits" and s["final_test_accuracy"] > 0.15
  rng = np.random.default_rng(0)
  path = tmp_path / "toy.npz"
  x = rng.normal(size=(300, 40)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int64)
  np.savez(path, x=x[:200], y=y[:200], x_test=x[200:], y_test=y[200:])
  cfg = tiny_config("data.name=npz", f"data.path={path}")
  s = train_and_evaluate(cfg, str(tmp_path / "npz"), progress=False)
  assert s["dataset"] == "toy" and s["final_test_accuracy"] > 0.7  # a linearly separable toy


# ---- bad input: one clear line, non-zero exit, nothing half-written ------------------------


def run_script(script_here, *args):
  """scripts/train.py in this process (tests/conftest.py): (exit status, stderr)."""
  code, _, stderr = script_here("train.py", "--no-progress", "--threads", "0", *args)
  return code, stderr


def assert_one_line_error(result, *fragments):
  code, stderr = result
  assert code == 1
  lines = [l for l in stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
  for fragment in fragments:
    assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize(
  "args,fragments",
  [
    (["--config", "experiments/nope.py"], ["does not exist"]),
    (["--config.optimizer.lr=1"], ["unknown config key 'optimizer.lr'"]),
    (["--config.num_steps=many"], ["'num_steps' expects int"]),
    (["--config.model.name=resnet"], ["unknown model 'resnet'"]),
    (["--config.data.name=imagenet"], ["unknown data source 'imagenet'"]),
    (
      ["--config", "experiments/lm_markov_tiny.py", "--config.data.n_ctx=256"],
      ["data.n_ctx (256) exceeds model.n_ctx (128)"],
    ),
    (
      [
        "--config",
        "experiments/lm_markov_tiny.py",
        "--config.data.name=text",
        "--config.data.path=/nonexistent/corpus.txt",
      ],
      ["/nonexistent/corpus.txt"],
    ),
    # More devices than this process has (8, tests/conftest.py).
    (["--config", "experiments/lm_markov_tiny.py", "--config.num_devices=9"], ["num_devices=9"]),
  ],
)
def test_bad_configs_fail_with_one_line(script_here, tmp_path, args, fragments):
  workdir = tmp_path / "run"
  result = run_script(script_here, "--workdir", str(workdir), *args)
  assert_one_line_error(result, *fragments)
  assert not (workdir / "checkpoints").exists()


def test_broken_config_file_fails_with_one_line(script_here, tmp_path):
  bad = tmp_path / "broken.py"
  bad.write_text("def get_config(:\n")
  result = run_script(script_here, "--config", str(bad), "--workdir", str(tmp_path / "run"))
  assert_one_line_error(result, "syntax error", "line 1")


def test_unwritable_workdir_fails_with_one_line(script_here, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  result = run_script(script_here, "--workdir", str(blocker / "run"))
  assert_one_line_error(result, "is not writable")


@pytest.mark.parametrize(
  "arrays,fragment",
  [
    ({"x": np.zeros((4, 40)), "y": np.zeros(4)}, "lacks array(s) x_test, y_test"),
    (
      {
        "x": np.zeros((4, 40)),
        "y": np.zeros(3),
        "x_test": np.zeros((2, 40)),
        "y_test": np.zeros(2),
      },
      "labels need shape (4,)",
    ),
    (
      {
        "x": np.zeros((4, 40)),
        "y": np.zeros(4),
        "x_test": np.zeros((2, 30)),
        "y_test": np.zeros(2),
      },
      "differ in shape",
    ),
  ],
)
def test_bad_data_files_are_clear_errors(tmp_path, arrays, fragment):
  path = tmp_path / "bad.npz"
  np.savez(path, **arrays)
  from research.data import DataError

  with pytest.raises(DataError) as e:
    train_and_evaluate(
      tiny_config("data.name=npz", f"data.path={path}"), str(tmp_path / "run"), progress=False
    )
  assert fragment in str(e.value)
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_corrupt_npz_is_a_clear_error(tmp_path):
  path = tmp_path / "bad.npz"
  path.write_bytes(b"this is not a zip file")
  from research.data import DataError

  with pytest.raises(DataError, match="not a readable .npz"):
    train_and_evaluate(
      tiny_config("data.name=npz", f"data.path={path}"), str(tmp_path / "run"), progress=False
    )


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  # Batches from step 25 on hold inputs near float32's limit: the loss overflows there.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4000, 40)).astype(np.float32)
  x[2400:] = 3e38
  y = rng.integers(0, 10, 4000)
  path = tmp_path / "diverge.npz"
  np.savez(path, x=x, y=y, x_test=x[:100], y_test=y[:100])
  workdir = str(tmp_path / "run")
  with pytest.raises(
    TrainingError,
    match=r"loss became .* at step 25; the last good "
    r"checkpoint is step 20",
  ):
    train_and_evaluate(tiny_config("data.name=npz", f"data.path={path}"), workdir, progress=False)
  with Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True) as ckpt:
    assert ckpt.all_steps() == [20]


def test_resume_with_a_different_config_is_refused_before_the_data_loads(
  tmp_path, monkeypatch, tiny_cnn_run
):
  workdir = str(tmp_path / "run")
  shutil.copytree(tiny_cnn_run[0], workdir)

  def no_data(config):
    raise AssertionError("the dataset was loaded before the workdir was checked")

  monkeypatch.setattr(loop_lib, "load_dataset", no_data)
  with pytest.raises(WorkdirError, match="different config.*optimizer.learning_rate"):
    train_and_evaluate(tiny_config("optimizer.learning_rate=0.001"), workdir, progress=False)


def test_progress_shows_no_accuracy_before_the_first_evaluation():
  assert postfix([0.5], [None]) == "loss=0.500"
  assert postfix([0.5], [0.25]) == "loss=0.500, test_acc=0.250"
  assert postfix([0.5, 0.7], [None, None]) == "2 runs, loss 0.500..0.700"
  assert postfix([0.5, 0.7], [None, 0.3]) == "2 runs, loss 0.500..0.700, test_acc 0.300 max"


def test_mnist1d_cache_gives_the_generated_arrays_and_regenerates_a_damaged_file(
  tmp_path, monkeypatch
):
  monkeypatch.setenv(mnist1d_lib.CACHE_ENV, str(tmp_path / "cache"))
  rng = np.random.default_rng(0)
  made = []

  def generate(seed, shuffle_seq):  # stands in for the 8 s generator, same dtypes
    made.append((seed, shuffle_seq))
    x, x_test = rng.normal(size=(80, 40)), rng.normal(size=(20, 40))
    return {"x": x, "y": np.arange(80) % 10, "x_test": x_test, "y_test": np.arange(20) % 10}

  monkeypatch.setattr(mnist1d_lib, "_generate", generate)
  first = mnist1d_lib.load_mnist1d(seed=7)
  path = mnist1d_lib.cache_path(7, False)
  assert os.path.isfile(path) and made == [(7, False)]
  cached = mnist1d_lib.load_mnist1d(seed=7)
  assert made == [(7, False)]  # read back, not generated
  for field in ("x_train", "y_train", "x_test", "y_test"):
    a, b = getattr(first, field), getattr(cached, field)
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), field
  mnist1d_lib.load_mnist1d(seed=7, shuffle_seq=True)  # another key, another file
  assert made[-1] == (7, True) and mnist1d_lib.cache_path(7, True) != path
  whole = open(path, "rb").read()
  flipped = bytearray(whole)
  flipped[len(whole) // 2] ^= 0xFF  # inside an array: the zip's CRC no longer matches
  for damage in (b"not a zip", whole[:-100], bytes(flipped)):
    with open(path, "wb") as f:
      f.write(damage)
    again = mnist1d_lib.load_mnist1d(seed=7)  # generated again, not a crash
    assert made[-1] == (7, False) and again.x_train.shape == first.x_train.shape
    assert mnist1d_lib.load_mnist1d(seed=7).x_train.tobytes() == again.x_train.tobytes()
  assert len(made) == 5
  assert not [n for n in os.listdir(tmp_path / "cache") if ".tmp" in n]


# kill -9 of the real script at random moments, then a re-run ending bitwise: the kill9 trial of
# tests/test_fault_campaign.py; 20 of them are in results/reliability.md.


MACHINE_CPUS = {int(c) for c in os.environ["TEST_MACHINE_CPUS"].split(",")}  # set by conftest


@pytest.mark.slow
@pytest.mark.skipif(len(MACHINE_CPUS) < 2, reason="needs two CPUs to launch differently")
def test_same_numbers_whatever_cpus_the_run_is_launched_on(repo_root, tmp_path):
  """XLA:CPU sizes its thread pool from the usable CPUs, changing rounding; --threads 1 pins.
  With --threads 0 the tiny CNN's 40 steps already end apart (1.4395047607 on two CPUs against
  1.4395046386 on one), so the tiny run shows what pinning prevents."""
  args = ["--config", "experiments/mnist1d_cnn.py:tiny"]
  last_cpu = max(MACHINE_CPUS)
  script = os.path.join(repo_root, "scripts", "train.py")
  losses = []
  for name, cpus in (("all", MACHINE_CPUS), ("one", {last_cpu})):
    workdir = str(tmp_path / name)
    # Restrict the child's CPUs from inside it (preexec_fn is unsafe in a threaded process).
    launcher = (
      f"import os, runpy, sys; os.sched_setaffinity(0, {cpus!r}) if {cpus!r} else None; "
      f"sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    result = subprocess.run(
      [sys.executable, "-c", launcher, script, "--no-progress", "--workdir", workdir, *args],
      cwd=repo_root,
      capture_output=True,
      text=True,
      timeout=120,
      env={**os.environ, "PYTHONPATH": repo_root},
    )
    assert result.returncode == 0, result.stderr
    losses.append(json.load(open(os.path.join(workdir, "summary.json")))["final_test_loss"])
  assert losses[0] == losses[1]


@pytest.mark.parametrize(
  "path",
  sorted(
    f"experiments/{f}"
    for f in os.listdir(os.path.join(os.path.dirname(__file__), "..", "experiments"))
    if f.endswith(".py") and f != "mnist1d_table1.py"
  ),
)
def test_every_experiment_config_validates_as_shipped(path):
  from research.config import validate
  from research.models import build_model

  config = load_config(path)
  validate(config)
  build_model(config.model, 10)  # its model fields are the module's


@pytest.mark.parametrize(
  "path",
  sorted(
    f"experiments/{f}"
    for f in os.listdir(os.path.join(os.path.dirname(__file__), "..", "experiments"))
    if f.endswith(".py")
  ),
)
def test_every_experiment_has_a_tiny_variant_that_only_shortens_it(path):
  from research.config import flatten

  full, tiny = flatten(load_config(path)), flatten(load_config(f"{path}:tiny"))
  assert tiny["num_steps"] <= 40 < full["num_steps"] and tiny["experiment"] == full["experiment"]
  assert tiny["seed"] == full["seed"] and tiny["model.name"] == full["model.name"]


def test_variants_combine_and_unknown_ones_are_named():
  both = load_config("experiments/mnist1d_gru.py:shuffled,tiny")
  assert both.data.shuffle_seq and both.num_steps == 40
  assert both.experiment == "mnist1d_gru_shuffled"
  assert load_config("experiments/mnist1d_gru.py:tiny,shuffled").to_dict() == both.to_dict()
  with pytest.raises(ConfigError, match="unknown variant 'wide'; this config has: shuffled, tiny"):
    load_config("experiments/mnist1d_gru.py:tiny,wide")
