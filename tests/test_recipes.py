"""Training recipes: schedules, clipping, decay masks, the logged learning rate, the validation
split and the best checkpoint it chooses."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from research.checkpoint import Checkpointer, CheckpointError, resolve_step
from research.config import ConfigError, load_config
from research.data import DataError, load_dataset, make_dataset, split_validation
from research.serving.restore import load_run
from research.training.loop import train_and_evaluate
from research.training.optimizers import learning_rate_used, lr_factor_schedule, make_optimizer

CNN_TINY = "experiments/mnist1d_cnn.py:tiny"  # 40 steps
EVAL_OFTEN = ["eval_every=10", "checkpoint_every=40"]  # evaluations between checkpoints


def scalars(workdir, tag):
  acc = EventAccumulator(workdir, size_guidance={"scalars": 0})
  acc.Reload()
  return {e.step: e.value for e in acc.Scalars(tag)}


def toy_params():
  return {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2,))}}


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedule_warms_up_then_decays_to_its_end_value(schedule):
  factor = lr_factor_schedule(schedule, warmup_steps=10, decay_steps=110, end_factor=0.1)
  values = np.array([float(factor(t)) for t in range(0, 121)])
  np.testing.assert_allclose(values[[0, 5, 10]], [0.0, 0.5, 1.0], atol=1e-6)
  assert np.all(np.diff(values[:11]) > 0) and np.all(np.diff(values[10:111]) <= 1e-7)
  np.testing.assert_allclose(values[110:], 0.1, atol=1e-6)
  assert lr_factor_schedule("constant", 0, 100, 0.0) is None


def test_default_optimizers_update_bitwise_like_plain_optax():
  grads = jax.tree.map(lambda p: 0.37 * p + 0.01, toy_params())
  for ours, plain in [
    (make_optimizer("adam", 1e-2), optax.adam(1e-2)),
    (make_optimizer("sgd", 0.1, momentum=0.9), optax.sgd(0.1, momentum=0.9)),
  ]:
    a, b = ours.init(toy_params()), plain.init(toy_params())
    for _ in range(5):
      ua, a = ours.update(grads, a, toy_params())
      ub, b = plain.update(grads, b, toy_params())
      for x, y in zip(jax.tree.leaves(ua), jax.tree.leaves(ub)):
        assert np.array_equal(x, y)


def test_logged_rate_is_the_rate_the_update_used():
  """SGD without momentum moves params by exactly -lr * grad: recover lr from the update."""
  opt = make_optimizer(
    "sgd", 0.5, momentum=0.0, schedule="linear", warmup_steps=4, end_factor=0.2, num_steps=12
  )
  params, grads = toy_params(), jax.tree.map(jnp.ones_like, toy_params())
  state = opt.init(params)
  factor = lr_factor_schedule("linear", 4, 12, 0.2)
  for t in range(12):
    updates, state = opt.update(grads, state, params)
    applied = -float(updates["dense"]["bias"][0])
    np.testing.assert_allclose(float(learning_rate_used(state)), applied, rtol=1e-6)
    np.testing.assert_allclose(applied, 0.5 * float(factor(t)), rtol=1e-6, atol=1e-9)


def test_clipping_and_decay_mask():
  params = toy_params()
  huge = jax.tree.map(lambda p: 1e3 * jnp.ones_like(p), params)
  clipped = make_optimizer("sgd", 1.0, momentum=0.0, clip_norm=1.0)
  updates, _ = clipped.update(huge, clipped.init(params), params)
  np.testing.assert_allclose(float(optax.global_norm(updates)), 1.0, rtol=1e-5)
  # Zero gradients: only weight decay moves params, and the mask keeps it off the bias.
  zeros = jax.tree.map(jnp.zeros_like, params)
  for mask, bias_moves in (("all", True), ("matrices", False)):
    opt = make_optimizer("adamw", 0.1, weight_decay=0.5, weight_decay_mask=mask)
    updates, _ = opt.update(zeros, opt.init(params), params)
    assert float(jnp.abs(updates["dense"]["kernel"]).min()) > 0
    assert (float(jnp.abs(updates["dense"]["bias"]).max()) > 0) == bias_moves


@pytest.mark.parametrize(
  "override, message",
  [
    ("optimizer.schedule=cos", "optimizer.schedule 'cos' is unknown"),
    ("optimizer.warmup_steps=50", "must exceed warmup_steps (50)"),
    ("optimizer.weight_decay_mask=bias", "optimizer.weight_decay_mask 'bias' is unknown"),
    ("optimizer.end_factor=2", "optimizer.end_factor is a fraction"),
    ("data.validation_size=-5", "data.validation_size must be an integer >= 0"),
  ],
)
def test_bad_recipes_are_config_errors(override, message):
  extra = ["optimizer.schedule=cosine"] if "warmup" in override else []
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    load_config(CNN_TINY, extra + [override])


def gpu_recipe_tiny():
  """lm_markov_gpu.py's optimizer recipe (warmup, cosine to 10 %, clipping, masked decay) on a
  model and data small enough for CPU: its tiny variant, on one device."""
  return load_config("experiments/lm_markov_gpu.py:tiny", ["num_devices=1"])


@pytest.mark.slow  # an LM run; the schedule's own tests stay
def test_gpu_lm_recipe_logs_the_scheduled_rate(tmp_path):
  config = gpu_recipe_tiny()
  opt, n = config.optimizer, config.num_steps
  assert (opt.schedule, opt.clip_norm, opt.weight_decay_mask) == ("cosine", 1.0, "matrices")
  assert opt.end_factor == 0.1 and 0 < opt.warmup_steps < n // 2
  workdir = str(tmp_path / "lm")
  summary = train_and_evaluate(config, workdir, progress=False)
  logged = scalars(workdir, "train/learning_rate")
  assert sorted(logged) == list(range(1, n + 1))  # every step
  factor = lr_factor_schedule("cosine", opt.warmup_steps, n, 0.1)
  for step, value in logged.items():  # at step s: the rate of the update from step s - 1
    np.testing.assert_allclose(value, opt.learning_rate * float(factor(step - 1)), rtol=1e-5)
  w = opt.warmup_steps
  assert logged[w] > logged[w // 2] and logged[n] < logged[(w + n) // 2]  # warms up, decays
  assert summary["best_selected_on"] == "-val_loss" and summary["validation_examples"] == 32


def test_validation_split_is_disjoint_and_deterministic():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(50, 4)).astype(np.float32)  # rows are unique
  y = np.arange(50) % 5
  data = make_dataset("toy", x[:40], y[:40], x[40:], y[40:])
  a, b = split_validation(data, 8), split_validation(data, 8)
  assert np.array_equal(a.x_val, b.x_val) and np.array_equal(a.x_train, b.x_train)
  assert len(a.x_val) == 8 and len(a.x_train) == 32
  rows = lambda arr: {r.tobytes() for r in arr}  # noqa: E731
  assert not rows(a.x_val) & rows(a.x_train) and not rows(a.x_val) & rows(a.x_test)
  assert rows(a.x_val) | rows(a.x_train) == rows(data.x_train)
  assert not np.array_equal(a.x_val, data.x_train[-8:])  # chosen by permutation, not the tail
  assert split_validation(data, 0) is data
  with pytest.raises(DataError, match="validation_size must be between 0 and 39"):
    split_validation(data, 40)


def test_language_model_validation_is_the_training_streams_tail():
  config = gpu_recipe_tiny()
  data = load_dataset(config.data)
  whole = load_dataset({**config.data.to_dict(), "validation_size": 0})
  assert np.array_equal(data.x_val, whole.x_train[-32:])
  assert np.array_equal(data.x_train, whole.x_train[:-32])
  assert np.array_equal(data.x_test, whole.x_test)


def test_best_checkpoint_is_the_step_the_summary_names(tmp_path):
  """Evaluated every 10 steps, checkpointed every 40: every new best is saved, so summary.json,
  the kept best and --checkpoint best agree, and the best is the top validation score."""
  workdir = str(tmp_path / "run")
  config = load_config(CNN_TINY, EVAL_OFTEN + ["data.validation_size=500"])
  summary = train_and_evaluate(config, workdir, progress=False)
  val = scalars(workdir, "val/accuracy")
  best_step = max(val, key=lambda s: (val[s], -s))  # the first step with the top score
  assert summary["best_step"] == best_step
  np.testing.assert_allclose(summary["best_val_accuracy"], val[best_step], rtol=1e-6)
  np.testing.assert_allclose(
    summary["best_test_accuracy"], scalars(workdir, "test/accuracy")[best_step], rtol=1e-6
  )
  with Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True) as ckpt:
    assert resolve_step(ckpt, "best") == best_step
    assert ckpt.latest_step() == 40
  assert load_run(workdir, "best").step == best_step


def test_without_validation_there_is_no_best(tmp_path):
  workdir = str(tmp_path / "run")
  summary = train_and_evaluate(load_config(CNN_TINY, EVAL_OFTEN), workdir, progress=False)
  assert summary["best_step"] is None and summary["best_selected_on"] is None
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f)["final_test_accuracy"] == summary["final_test_accuracy"]
  with Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True) as ckpt:
    assert ckpt.all_steps() == [40]
    with pytest.raises(CheckpointError, match="chosen on a validation split"):
      resolve_step(ckpt, "best")
