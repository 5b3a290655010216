"""Data parallelism: 8 CPU devices (conftest) against 1, in one step, a run, and checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.checkpoint import Checkpointer
from research.config import load_config
from research.data import BatchSchedule
from research.data.mnist1d import load_mnist1d
from research.models import build_model
from research.training.loop import train_and_evaluate
from research.training.optimizers import make_optimizer
from research.training.parallel import (
  ParallelError,
  batch_sharded,
  check_batch,
  data_mesh,
  replicate,
)
from research.training.step import create_train_state, make_train_chunk, make_train_step


def tiny(num_devices, steps=40, **extra):
  """The tiny MLP (evaluated and checkpointed every 20 steps), its batch split 8 ways."""
  return load_config(
    "experiments/mnist1d_mlp.py:tiny",
    [
      f"num_steps={steps}",
      "batch_size=96",
      f"num_devices={num_devices}",
      *[f"{k}={v}" for k, v in extra.items()],
    ],
  )


def chunk_losses(num_devices):
  """Losses of 20 steps of the MLP on a mesh of `num_devices`, and the compiled program."""
  config = tiny(num_devices)
  data = load_mnist1d()
  model = build_model(config.model, 10)
  optimizer = make_optimizer(**config.optimizer)
  mesh = data_mesh(num_devices)
  state = replicate(
    create_train_state(model, optimizer, jnp.zeros((1, 40)), jax.random.key(0)), mesh
  )
  x, y = replicate((data.x_train, data.y_train), mesh)
  indices = jax.device_put(
    BatchSchedule(len(data.x_train), 96, False, 0).chunk(0, 20), batch_sharded(mesh, batch_axis=1)
  )
  chunk = jax.jit(make_train_chunk(make_train_step(model, optimizer)), donate_argnums=0)
  compiled = chunk.lower(state, x, y, indices).compile()
  new_state, metrics = compiled(state, x, y, indices)
  assert new_state.params["params"]["Dense_0"]["kernel"].sharding.is_fully_replicated
  return np.asarray(metrics["loss"]), compiled.as_text()


def test_eight_devices_match_one_for_the_same_global_batch():
  assert jax.device_count() == 8
  one, hlo_one = chunk_losses(1)
  eight, hlo_eight = chunk_losses(8)
  # The batch really is split: each device computes its share and the gradients are summed.
  assert "all-reduce" in hlo_eight and "all-reduce" not in hlo_one
  np.testing.assert_allclose(eight, one, rtol=2e-5)
  assert not np.allclose(one[0], one[-1])  # it trained


def test_a_run_on_eight_devices_ends_where_one_device_ends(tmp_path):
  one = train_and_evaluate(tiny(1), str(tmp_path / "one"), progress=False)
  eight = train_and_evaluate(tiny(8), str(tmp_path / "eight"), progress=False)
  assert eight["devices"] == 8 and one["devices"] == 1
  assert eight["final_test_loss"] == pytest.approx(one["final_test_loss"], rel=1e-5)
  assert eight["final_test_accuracy"] == pytest.approx(one["final_test_accuracy"], abs=2e-3)


@pytest.mark.slow  # three runs each; test_a_run_on_eight_devices_ends_where_one_device_ends stays
@pytest.mark.parametrize("first,second", [(8, 1), (1, 8)])
def test_checkpoint_from_one_device_count_resumes_on_another(tmp_path, first, second):
  straight = train_and_evaluate(tiny(second, steps=60), str(tmp_path / "straight"), progress=False)
  workdir = str(tmp_path / "moved")
  train_and_evaluate(tiny(first, steps=20), workdir, progress=False)
  moved = train_and_evaluate(tiny(second, steps=60), workdir, progress=False)
  assert moved["steps"] == 60 and moved["devices"] == second
  assert moved["final_test_loss"] == pytest.approx(straight["final_test_loss"], rel=1e-5)


def test_restored_state_takes_the_sharding_asked_for(tmp_path):
  model = build_model({"name": "mlp"}, 10)
  optimizer = make_optimizer("adam", 1e-2)
  state = create_train_state(model, optimizer, jnp.zeros((1, 40)), jax.random.key(3))
  on_eight = replicate(state, data_mesh(8))
  with Checkpointer(tmp_path / "ckpt") as ckpt:
    ckpt.save(1, on_eight.params, on_eight.opt_state, {"step": 1}, 0.5)
    ckpt.wait()
    target = replicate(state, data_mesh(1))
    params, _, _ = ckpt.restore(1, target.params, target.opt_state)
  leaf = jax.tree.leaves(params)[0]
  assert len(leaf.sharding.device_set) == 1
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_device_counts_and_batches_are_one_line_errors(tmp_path):
  with pytest.raises(
    ParallelError, match="num_devices=9 .*XLA_FLAGS=--xla_force_host_platform_device_count=9"
  ):
    data_mesh(9)
  with pytest.raises(ParallelError, match="multiple of 8"):
    check_batch(data_mesh(8), 100)
  with pytest.raises(ParallelError, match="does not split"):
    train_and_evaluate(tiny(8, batch_size=100), str(tmp_path / "run"), progress=False)
  assert not (tmp_path / "run").exists()  # nothing half-written
