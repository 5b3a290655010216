"""Runs that survive: a signal checkpoints and stops, damaged steps are set aside (never deleted),
a failed start leaves nothing that blocks, and a resume shows each step once in TensorBoard.

In-process and cheap; `tests/test_fault_campaign.py` repeats the same through real signals sent
to `scripts/train.py`.
"""

import glob
import hashlib
import json
import os
import shutil
import signal

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from research import workdir as workdir_lib
from research.checkpoint import Checkpointer, CheckpointError, damaged_dir, find_damaged
from research.config import load_config
from research.serving.restore import load_run
from research.tensorboard_writer import SummaryWriter
from research.training import preemption
from research.training.loop import TrainingError, train_and_evaluate


def tiny(*extra):
  """The tiny MLP run on to 60 steps: three checkpoints (20, 40, 60), all kept."""
  return load_config(
    "experiments/mnist1d_mlp.py:tiny", ["num_steps=60", "keep_checkpoints=3", *extra]
  )


def final_params(workdir):
  run = load_run(workdir)
  return run.step, [np.asarray(x) for x in __import__("jax").tree.leaves(run.params)]


def tree_digest(directory):
  """Path -> sha256 of every file under `directory`."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      full = os.path.join(root, name)
      with open(full, "rb") as f:
        out[os.path.relpath(full, directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """One uninterrupted run every interrupted or damaged one must end equal to."""
  workdir = str(tmp_path_factory.mktemp("ref") / "run")
  summary = train_and_evaluate(tiny(), workdir, progress=False)
  return workdir, summary, final_params(workdir)


@pytest.fixture(autouse=True)
def _no_pending_signal():
  preemption.reset()
  yield
  preemption.reset()


def assert_same_end(workdir, reference):
  _, ref_summary, (ref_step, ref_leaves) = reference
  step, leaves = final_params(workdir)
  assert step == ref_step
  for a, b in zip(leaves, ref_leaves):
    np.testing.assert_array_equal(a, b)
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f)["final_test_loss"] == ref_summary["final_test_loss"]


def test_a_signal_checkpoints_the_step_reached_and_the_resume_ends_bitwise(tmp_path, reference):
  workdir = str(tmp_path / "run")
  preemption._State.received = signal.SIGTERM  # as if SIGTERM arrived during the first chunk
  with pytest.raises(preemption.Interrupted) as stopped:
    train_and_evaluate(tiny(), workdir, progress=False)
  assert stopped.value.exit_code == 143 and stopped.value.step == 10
  assert "SIGTERM at step 10; checkpoint saved" in str(stopped.value)
  with Checkpointer(workdir_lib.checkpoint_dir(workdir), read_only=True) as ckpt:
    assert ckpt.all_steps() == [10]  # not a checkpoint step by config: saved for the signal
  assert not os.path.exists(os.path.join(workdir, "summary.json"))
  preemption.reset()
  train_and_evaluate(tiny(), workdir, progress=False)
  assert_same_end(workdir, reference)
  # TensorBoard: the events flushed before the stop, then a resume: each step once.
  accumulator = EventAccumulator(workdir, size_guidance={"scalars": 0})
  accumulator.Reload()
  steps = [e.step for e in accumulator.Scalars("train/loss")]
  assert steps == list(range(1, 61))


def test_resume_shows_each_step_once_after_a_kill(tmp_path):
  """A killed run logged steps 1..15 but checkpointed 10; the resume logs 11..20 again. The
  START event the resume writes makes TensorBoard drop the first 11..15."""
  logdir = str(tmp_path)
  with SummaryWriter(logdir) as first:
    first.session_start(1)
    for step in range(1, 16):
      first.scalar("train/loss", 1.0, step)
  with SummaryWriter(logdir) as resumed:
    resumed.session_start(11)
    for step in range(11, 21):
      resumed.scalar("train/loss", 2.0, step)
  assert len(glob.glob(os.path.join(logdir, "events*"))) == 2
  accumulator = EventAccumulator(logdir)
  accumulator.Reload()
  values = {e.step: e.value for e in accumulator.Scalars("train/loss")}
  assert sorted(values) == list(range(1, 21))
  assert all(values[s] == (1.0 if s <= 10 else 2.0) for s in values)


def test_a_start_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path):
  workdir = tmp_path / "run"
  x = np.random.default_rng(0).normal(size=(400, 40)).astype(np.float32)
  x[:] = 3e38  # the first step's loss overflows
  y = np.arange(400) % 10
  np.savez(tmp_path / "bad.npz", x=x, y=y, x_test=x[:50], y_test=y[:50])
  bad = tiny("data.name=npz", f"data.path={tmp_path / 'bad.npz'}", "batch_size=40")
  with pytest.raises(TrainingError, match="no checkpoint was written"):
    train_and_evaluate(bad, str(workdir), progress=False)
  assert not workdir.exists()
  # A workdir that existed keeps what it held, and only that.
  workdir.mkdir()
  (workdir / "notes.txt").write_text("mine")
  with pytest.raises(TrainingError):
    train_and_evaluate(bad, str(workdir), progress=False)
  assert sorted(os.listdir(workdir)) == ["notes.txt"]


def test_a_config_left_by_a_killed_start_does_not_block_the_corrected_command(tmp_path, reference):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  # What a kill while JAX started leaves: the pinned config of another run, no checkpoint.
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({"optimizer": {"learning_rate": 1e9}}, f)
  train_and_evaluate(tiny(), workdir, progress=False)
  assert_same_end(workdir, reference)
  with pytest.raises(workdir_lib.WorkdirError, match="different config"):  # now it binds
    train_and_evaluate(tiny("optimizer.learning_rate=0.5"), workdir, progress=False)


def _damage_truncate(step_dir):
  for item in ("params", "opt_state"):
    for f in glob.glob(os.path.join(step_dir, item, "ocdbt.process_0", "d", "*")):
      os.truncate(f, 7)


# The other kinds (deleted items, garbage metadata, empty and half-deleted steps, two damaged)
# run in tests/test_fault_campaign.py and scripts/fault_campaign.py.
@pytest.mark.parametrize("damage", [_damage_truncate])
def test_a_damaged_latest_step_is_set_aside_and_the_run_resumes_from_the_newest_good(
  tmp_path, reference, damage, capsys
):
  ref_workdir = reference[0]
  workdir = str(tmp_path / "run")
  train_and_evaluate(tiny("num_steps=40"), workdir, progress=False)  # the schedule is constant
  ckpt_dir = workdir_lib.checkpoint_dir(workdir)
  damage(os.path.join(ckpt_dir, "40"))
  before = tree_digest(os.path.join(ckpt_dir, "40"))
  # Inference names the damaged step and what restores instead.
  with pytest.raises(CheckpointError, match=r"step 40 .* is damaged .*pass --checkpoint 20"):
    load_run(workdir)
  assert load_run(workdir, checkpoint=20).step == 20
  capsys.readouterr()
  train_and_evaluate(tiny(), workdir, progress=False)
  warning = capsys.readouterr().err.strip().splitlines()
  assert len(warning) == 1 and "damaged checkpoint step 40" in warning[0], warning
  assert "resuming from step 20" in warning[0]
  moved = os.path.join(damaged_dir(ckpt_dir), "40")
  assert tree_digest(moved) == before  # moved whole, nothing deleted
  assert_same_end(workdir, reference)
  assert ref_workdir != workdir


def test_a_half_deleted_step_is_never_listed_and_is_set_aside(tmp_path):
  import jax.numpy as jnp

  params = {"w": jnp.arange(4.0)}
  with Checkpointer(tmp_path / "ck", keep_latest=3) as ckpt:
    for step in (1, 2, 3):
      ckpt.save(step, params, {"m": jnp.zeros(4)}, {"step": step}, None)
  # A kill while an old step was removed file by file (before Orbax deleted by renaming).
  os.remove(tmp_path / "ck" / "1" / "_CHECKPOINT_METADATA")
  shutil.rmtree(tmp_path / "ck" / "1" / "params")
  # A kill while a step sat in the trash Orbax renames into: never a step, emptied at open.
  os.makedirs(tmp_path / "ck" / ".deleting" / "0" / "params")
  assert set(find_damaged(str(tmp_path / "ck"))) == {1}
  with Checkpointer(tmp_path / "ck", read_only=True) as ckpt:
    assert ckpt.all_steps() == [2, 3] and 1 in ckpt.damaged
  with Checkpointer(tmp_path / "ck", keep_latest=3) as ckpt:
    assert ckpt.all_steps() == [2, 3]
    assert [s for s, _, _ in ckpt.set_aside] == [1]
  assert os.path.isdir(tmp_path / "ck_damaged" / "1")
  assert not os.path.exists(tmp_path / "ck" / ".deleting")


def test_old_steps_are_deleted_by_an_atomic_rename(tmp_path):
  import jax.numpy as jnp

  with Checkpointer(tmp_path / "ck", keep_latest=1) as ckpt:
    for step in (1, 2, 3):
      ckpt.save(step, {"w": jnp.ones(2) * step}, {"m": jnp.zeros(2)}, {"step": step}, None)
      ckpt.wait()
    assert ckpt.all_steps() == [3]
  assert sorted(os.listdir(tmp_path / "ck")) == ["3"]  # the trash is emptied after each wait
