"""No run loses data to another command: one writer per workdir (a lock that dies with its
holder), a failed start takes back only what it made, a file where a run's directory goes is
refused before anything is written, and a resume under another numeric setting is refused.

In-process where it can be; the lock's holder is a child process, so it has its own PID.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from research import dashboard, runtime, workdir_lock
from research import workdir as workdir_lib
from research.config import load_config
from research.training import loop as loop_lib
from research.training.loop import TrainingError, train_and_evaluate
from research.workdir import WorkdirError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HOLDER = (
  "import sys; from research import workdir_lock\n"
  "with workdir_lock.hold([sys.argv[1]]):\n"
  "  print('held', flush=True)\n"
  "  sys.stdin.read()\n"
)


@pytest.fixture
def lock_holder():
  """`lock_holder(workdir)` starts a child that holds the workdir's lock; returns the child."""
  children = []

  def start(workdir):
    child = subprocess.Popen(
      [sys.executable, "-c", _HOLDER, str(workdir)],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
      env={**os.environ, "PYTHONPATH": REPO},
    )
    children.append(child)
    assert child.stdout.readline().strip() == "held"
    return child

  yield start
  for child in children:
    if child.poll() is None:
      child.kill()
    child.wait()


def digest(directory):
  """Path -> sha256 of every file under `directory` (the lock file aside), and its directories."""
  out = {}
  for root, dirs, files in os.walk(directory):
    for name in dirs:
      out[os.path.relpath(os.path.join(root, name), directory)] = "dir"
    for name in files:
      full = os.path.join(root, name)
      if name != workdir_lib.LOCK:
        with open(full, "rb") as f:
          out[os.path.relpath(full, directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


def one_line_error(result, *fragments):
  code, _, stderr = result
  lines = [line for line in stderr.strip().splitlines() if line.strip()]
  assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
  for fragment in fragments:
    assert fragment in lines[0], (fragment, lines[0])
  return lines[0]


def train_script(script_here, workdir, *extra):
  argv = ["--config", "experiments/mnist1d_cnn.py:tiny", "--workdir", str(workdir), *extra]
  return script_here("train.py", "--no-progress", "--threads", "0", *argv)


def no_data(config):
  raise AssertionError("the dataset was loaded before the workdir was checked")


# ---- One writer per workdir ----------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder_and_changes_nothing(
  script_here, tmp_path, tiny_cnn_run, lock_holder
):
  workdir = tmp_path / "run"
  shutil.copytree(tiny_cnn_run[0], workdir)
  before = digest(workdir)
  child = lock_holder(workdir)
  line = one_line_error(
    train_script(script_here, workdir, "--config.num_steps=60"),
    f"in use by process {child.pid}",
    "wait for it to finish, or choose another --workdir",
  )
  assert "-c" in line  # the holder's command line
  assert digest(workdir) == before
  # A fresh workdir that another process has just claimed: nothing of this run lands in it.
  fresh = tmp_path / "fresh"
  lock_holder(fresh)
  one_line_error(train_script(script_here, fresh), "in use by process")
  assert os.listdir(fresh) == [workdir_lib.LOCK]


def test_a_lock_whose_holder_was_killed_does_not_block(tmp_path, lock_holder):
  workdir = tmp_path / "run"
  child = lock_holder(workdir)
  os.kill(child.pid, signal.SIGKILL)
  child.wait()
  assert os.listdir(workdir) == [workdir_lib.LOCK]  # the stale file stays, with the dead PID
  assert workdir_lock.holder(str(workdir)).startswith(f"process {child.pid}")
  with workdir_lock.hold([str(workdir)]):
    assert workdir_lock.holder(str(workdir)).startswith(f"process {os.getpid()}")
    with workdir_lock.hold([str(workdir)]):  # a nested hold of this process counts up
      pass
    assert os.path.exists(workdir / workdir_lib.LOCK)
  assert os.listdir(workdir) == []  # the holder removes the file as it lets go


def test_a_lock_held_through_another_open_file_refuses_and_a_new_workdir_goes_again(tmp_path):
  import fcntl

  workdir = tmp_path / "a" / "run"
  os.makedirs(workdir)
  with open(workdir / workdir_lib.LOCK, "w") as f:  # flock is per open file description
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with pytest.raises(WorkdirError, match="in use by another process"):  # no PID written
      with workdir_lock.hold([str(workdir)]):
        pass
  assert os.listdir(workdir) == [workdir_lib.LOCK]
  # Directories the lock made are gone with it when nothing else went into them.
  new = tmp_path / "b" / "c" / "run"
  with workdir_lock.hold([str(new)]):
    assert os.path.isdir(new)
  assert not os.path.exists(tmp_path / "b")


def test_a_signal_before_training_leaves_no_lock_behind(tmp_path):
  """A signal before training exits at once (`os._exit`, no cleanup); the lock file goes first,
  with the directories made for it, so "nothing was written" stays true."""
  code = (
    "import signal, sys; from research import workdir_lock; from research.training import "
    "preemption\nworkdir_lock.acquire(sys.argv[1]); preemption._handle(signal.SIGTERM, None)"
  )
  workdir = tmp_path / "new" / "run"
  result = subprocess.run(
    [sys.executable, "-c", code, str(workdir)],
    capture_output=True,
    text=True,
    env={**os.environ, "PYTHONPATH": REPO},
  )
  assert result.returncode == 143 and "nothing was written" in result.stderr
  assert not os.path.exists(tmp_path / "new")


def test_a_second_sweep_on_one_directory_is_refused_before_it_writes(tmp_path, lock_holder):
  from research.training.sweep import run_sweep

  workdir = tmp_path / "sweep"
  child = lock_holder(workdir)
  with pytest.raises(WorkdirError, match=f"in use by process {child.pid}"):
    run_sweep("experiments/mnist1d_cnn.py:tiny", [], ["seed=0,1"], str(workdir), workers=1)
  assert os.listdir(workdir) == [workdir_lib.LOCK]


def test_train_vs_infer_and_bench_take_the_lock(tmp_path, tiny_cnn_run, lock_holder):
  from research.bench.inference import BenchSettings, write_benchmark
  from research.studies.train_vs_infer import CostSettings, train_vs_infer

  workdir = tmp_path / "run"
  child = lock_holder(workdir)
  config = load_config("experiments/mnist1d_cnn.py:tiny")
  with pytest.raises(WorkdirError, match=f"in use by process {child.pid}"):
    train_vs_infer(config, str(workdir), CostSettings(), [], log=lambda s: None)
  assert os.listdir(workdir) == [workdir_lib.LOCK]
  trained = tmp_path / "trained"
  shutil.copytree(tiny_cnn_run[0], trained)
  before = digest(trained)
  child = lock_holder(trained)
  settings = BenchSettings(precisions=("float32",), engines=("jax",), loadgen=False)
  with pytest.raises(WorkdirError, match=f"in use by process {child.pid}"):
    write_benchmark(str(trained), "latest", settings, [], log=lambda s: None)
  assert digest(trained) == before


# ---- A failed start takes back what it made, and only that --------------------------------------


def test_a_failed_start_keeps_what_other_processes_wrote_meanwhile(tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "notes.txt").write_text("mine, from before")
  x = np.random.default_rng(0).normal(size=(400, 40)).astype(np.float32)
  y = np.arange(400) % 10
  np.savez(tmp_path / "good.npz", x=x, y=y, x_test=x[:50], y_test=y[:50])
  x_bad = np.full_like(x, 3e38)  # the first step's loss overflows: no checkpoint is written
  np.savez(tmp_path / "bad.npz", x=x_bad, y=y, x_test=x_bad[:50], y_test=y[:50])
  others = ["other.log", "events.out.tfevents.1.otherhost.1.0", "other_job/part.bin"]
  publish = dashboard.publish_training

  def meanwhile(*args, **kwargs):  # another process writes into W while this start runs
    for name in others:
      os.makedirs(os.path.dirname(workdir / name), exist_ok=True)
      (workdir / name).write_text("theirs")
    return publish(*args, **kwargs)

  monkeypatch.setattr(dashboard, "publish_training", meanwhile)
  tiny = ["num_steps=20", "batch_size=40", "data.name=npz"]
  bad = load_config("experiments/mnist1d_mlp.py:tiny", [*tiny, f"data.path={tmp_path}/bad.npz"])
  with pytest.raises(TrainingError, match="no checkpoint was written"):
    train_and_evaluate(bad, str(workdir), progress=False)
  assert sorted(os.listdir(workdir)) == sorted(
    ["notes.txt", "other.log", "other_job", "events.out.tfevents.1.otherhost.1.0"]
  )
  assert (workdir / "other_job" / "part.bin").read_text() == "theirs"
  monkeypatch.setattr(dashboard, "publish_training", publish)
  good = load_config("experiments/mnist1d_mlp.py:tiny", [*tiny, f"data.path={tmp_path}/good.npz"])
  assert train_and_evaluate(good, str(workdir), progress=False)["steps"] == 20
  assert (workdir / "other.log").read_text() == "theirs"


def test_a_failed_start_restores_the_config_and_record_it_rewrote(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text('{"left": "by a killed start"}')
  start = workdir_lib.prepare(
    str(workdir), load_config("experiments/mnist1d_mlp.py:tiny"), numerics={"backend": "cpu"}
  )
  (workdir / "checkpoints").mkdir()
  (workdir / f"events.out.tfevents.1.{os.uname().nodename}.{os.getpid()}.0").write_text("")
  start.undo()
  assert os.listdir(workdir) == ["config.json"]
  assert (workdir / "config.json").read_text() == '{"left": "by a killed start"}'


# ---- The wrong kind of entry where the run's layout goes ----------------------------------------


@pytest.mark.parametrize(
  "name,make,fragment",
  [
    ("checkpoints", "file", "checkpoints is not a directory"),
    ("summary.json", "dir", "summary.json is a directory"),
  ],
)
def test_a_file_where_the_runs_directory_goes_is_refused_at_once(
  script_here, tmp_path, tiny_cnn_run, monkeypatch, name, make, fragment
):
  workdir = tmp_path / "run"
  shutil.copytree(tiny_cnn_run[0], workdir)
  target = workdir / name
  shutil.rmtree(target) if target.is_dir() else target.unlink()
  target.mkdir() if make == "dir" else target.write_text("not a directory")
  before = digest(workdir)
  monkeypatch.setattr(loop_lib, "load_dataset", no_data)
  line = one_line_error(train_script(script_here, workdir), fragment, "move it out of the way")
  assert str(target) in line
  assert digest(workdir) == before and not os.path.exists(workdir / workdir_lib.LOCK)


# ---- A resume under another numeric environment --------------------------------------------------


def test_a_resume_under_another_numeric_setting_is_refused(tmp_path, tiny_cnn_run, monkeypatch):
  workdir = tmp_path / "run"
  shutil.copytree(tiny_cnn_run[0], workdir)
  with open(workdir / workdir_lib.NUMERICS) as f:
    recorded = json.load(f)
  assert recorded == runtime.numeric_environment()  # the fixture trained in this process
  before = digest(workdir)
  longer = load_config("experiments/mnist1d_cnn.py:tiny", ["num_steps=60"])
  monkeypatch.setattr(loop_lib, "load_dataset", no_data)
  changes = {
    "(JAX x64 mode off, now on), so a resume would not continue its numbers; re-run with "
    "JAX_ENABLE_X64=0, or use a new --workdir": {"jax_enable_x64": True},
    f"(XLA:CPU on {recorded['xla_cpu_threads']} thread(s), now 7)": {"xla_cpu_threads": 7},
  }
  for message, change in changes.items():
    monkeypatch.setattr(
      runtime, "numeric_environment", lambda change=change: {**recorded, **change}
    )
    with pytest.raises(WorkdirError, match="another numeric setting") as refused:
      train_and_evaluate(longer, str(workdir), progress=False)
    assert message in str(refused.value)
    assert digest(workdir) == before
  # Another backend is recorded, not refused; nor is the thread count off the CPU.
  other = {**recorded, "backend": "gpu", "xla_cpu_threads": 7}
  workdir_lib.check_numerics(str(workdir), other)


def test_a_run_without_a_numeric_record_resumes_as_before_and_gets_one(tmp_path, tiny_cnn_run):
  workdir = tmp_path / "run"
  shutil.copytree(tiny_cnn_run[0], workdir)
  os.remove(workdir / workdir_lib.NUMERICS)  # a run made before the record existed
  summary = train_and_evaluate(
    load_config("experiments/mnist1d_cnn.py:tiny", ["num_steps=60"]), str(workdir), progress=False
  )
  assert summary["steps"] == 60
  with open(workdir / workdir_lib.NUMERICS) as f:
    assert json.load(f) == runtime.numeric_environment()
  assert workdir_lib.LOCK not in os.listdir(workdir)


def test_the_numeric_environment_sees_x64_and_pinned_threads(monkeypatch):
  import jax

  with jax.enable_x64(True):
    assert runtime.numeric_environment()["jax_enable_x64"] is True
  assert runtime.numeric_environment()["jax_enable_x64"] is False
  monkeypatch.setenv("XLA_FLAGS", runtime.ONE_THREAD_FLAGS)
  assert runtime.numeric_environment()["xla_cpu_threads"] == 1
  monkeypatch.setenv("XLA_FLAGS", "")
  assert runtime.numeric_environment()["xla_cpu_threads"] == len(os.sched_getaffinity(0))
