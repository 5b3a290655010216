import os
import shutil

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.checkpoint import Checkpointer, CheckpointError, resolve_step


def _state():
  params = {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.ones(3)}}
  return params, optax.adam(1e-2).init(params)


def test_latest_n_plus_best_survive_a_restart(tmp_path):
  params, opt_state = _state()
  accuracy = {10: 0.5, 20: 0.9, 30: 0.6, 40: 0.7, 50: 0.65}
  with Checkpointer(tmp_path, keep_latest=2) as ckpt:
    for step in (10, 20, 30):
      ckpt.save(step, params, opt_state, {"step": step}, accuracy[step])
  with Checkpointer(tmp_path, keep_latest=2) as ckpt:  # a new process would do the same
    for step in (40, 50):
      ckpt.save(step, params, opt_state, {"step": step}, accuracy[step])
  with Checkpointer(tmp_path, read_only=True) as ckpt:
    assert ckpt.all_steps() == [20, 40, 50]
    assert ckpt.best_step() == 20
    assert resolve_step(ckpt, "best") == 20 and resolve_step(ckpt, "latest") == 50


def test_full_restore_gives_optax_types_back(tmp_path):
  params, opt_state = _state()
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, params, opt_state, {"step": 1, "note": "x"}, 0.5)
  with Checkpointer(tmp_path, read_only=True) as ckpt:
    p, o, meta = ckpt.restore(1, params, opt_state)
  assert type(o) is type(opt_state) and type(o[0]) is type(opt_state[0])  # not plain lists/dicts
  np.testing.assert_array_equal(p["dense"]["kernel"], params["dense"]["kernel"])
  assert meta == {"step": 1, "note": "x"}


def test_params_only_restore_never_reads_optimizer_state(tmp_path):
  params, opt_state = _state()
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(7, params, opt_state, {"step": 7}, 0.5)
  shutil.rmtree(tmp_path / "7" / "opt_state")  # if it were read, restoring would fail
  with Checkpointer(tmp_path, read_only=True) as ckpt:
    restored = ckpt.restore_params(7, params)
    np.testing.assert_array_equal(restored["dense"]["bias"], params["dense"]["bias"])
    with pytest.raises(CheckpointError, match="is damaged .item .opt_state. is missing"):
      ckpt.restore(7, params, opt_state)


def test_missing_checkpoints_are_clear_errors(tmp_path):
  with Checkpointer(tmp_path / "empty") as ckpt:
    with pytest.raises(CheckpointError, match="no checkpoint in .*train first"):
      resolve_step(ckpt, "latest")
  params, opt_state = _state()
  with Checkpointer(tmp_path / "one") as ckpt:
    ckpt.save(3, params, opt_state, {"step": 3}, None)
  with Checkpointer(tmp_path / "one", read_only=True) as ckpt:
    with pytest.raises(CheckpointError, match="no checkpoint at step 5.*available: 3"):
      resolve_step(ckpt, 5)


def test_corrupt_params_are_a_clear_error(tmp_path):
  params, opt_state = _state()
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(2, params, opt_state, {"step": 2}, None)
  for root, _, files in os.walk(tmp_path / "2" / "params"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  with Checkpointer(tmp_path, read_only=True) as ckpt:
    with pytest.raises(CheckpointError, match="step 2"):
      ckpt.restore_params(2, params)
