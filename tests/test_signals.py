"""Signals to processes that own workers or train: forwarded, checkpointed, one line each.

`research/training/workers.py` is driven here through a small script whose jobs stand in for
training: "checkpoint" records a signal the way the training loop does and raises
`Interrupted` (2 runs each), "stubborn" records it and goes on, "sleep" has nothing to save,
"fail" raises a UserError. Each job leaves `<name>.<worker pid>` in a marker directory when it
starts, so a test knows the workers' process ids.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from research.training import preemption

JOBS = """
import os, sys, time

from research.errors import UserError
from research.training import preemption


def job(kind, marker, seconds):
  open(f"{marker}.{os.getpid()}", "w").close()
  if kind == "fail" and marker.endswith("job0"):
    raise UserError("job0 cannot run: a one-line error from a worker")
  if kind in ("checkpoint", "fail"):
    with preemption.deferred():
      for step in range(int(seconds / 0.02)):
        time.sleep(0.02)
        if preemption.requested():
          raise preemption.Interrupted(preemption.requested(), step, runs=2)
  elif kind == "stubborn":
    with preemption.deferred():
      time.sleep(seconds)
  else:
    time.sleep(seconds)
  return os.getpid()


def main():
  from research.training.workers import run_jobs

  kind, markers, jobs, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
  cores = sorted(os.sched_getaffinity(0))
  done = run_jobs(
    job,
    [(f"job{i}", (kind, os.path.join(markers, f"job{i}"), 60.0)) for i in range(jobs)],
    [cores[i % len(cores)] for i in range(workers)],
  )
  print(sorted(done))


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main, preemptible=True)
"""


def _start(repo_root, tmp_path, kind, jobs=3, workers=2, wait=True):
  """The script running `jobs` jobs on `workers` workers, once every worker runs one (with
  `wait`): (process, {job name: worker pid})."""
  script, markers = tmp_path / "jobs.py", tmp_path / "markers"
  script.write_text(JOBS)
  markers.mkdir()
  proc = subprocess.Popen(
    [sys.executable, str(script), kind, str(markers), str(jobs), str(workers)],
    env={**os.environ, "PYTHONPATH": repo_root},
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  deadline = time.monotonic() + 120
  while wait and len(os.listdir(markers)) < workers:
    assert proc.poll() is None, proc.communicate()
    assert time.monotonic() < deadline, "the workers never started their jobs"
    time.sleep(0.05)
  time.sleep(0.2 if wait else 0)  # inside the jobs' deferred() blocks
  started = dict(name.split(".") for name in os.listdir(markers))
  return proc, {job: int(pid) for job, pid in started.items()}


def _finish(proc, timeout=10):
  """(exit status, stderr lines other than the progress bar's, seconds to exit)."""
  t = time.monotonic()
  _, err = proc.communicate(timeout=timeout)
  lines = [line for line in err.splitlines() if line.strip() and not line.startswith("jobs:")]
  return proc.returncode, lines, time.monotonic() - t


def _gone(pid, within=5.0):
  """Whether `pid` has exited (a zombie left to init counts as gone) within `within` seconds."""
  deadline = time.monotonic() + within
  while time.monotonic() < deadline:
    try:
      with open(f"/proc/{pid}/stat") as f:
        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
          return True
    except FileNotFoundError:
      return True
    time.sleep(0.05)
  return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_the_parent_reaches_every_worker_then_one_line(repo_root, tmp_path, signum):
  proc, workers = _start(repo_root, tmp_path, "checkpoint")
  assert sorted(workers) == ["job0", "job1"]  # longest first; job2 waits for a free worker
  proc.send_signal(signum)
  code, lines, seconds = _finish(proc)
  name = signal.Signals(signum).name
  assert code == 128 + signum and seconds < 5
  assert lines == [
    f"interrupted by {name}: 4 run(s) checkpointed; re-run the same command to resume"
  ]
  assert all(_gone(pid) for pid in workers.values())
  assert sorted(os.listdir(tmp_path / "markers"))[-1].startswith("job1.")  # job2 never started


def test_a_killed_worker_is_one_line_naming_its_job_and_stops_the_others(repo_root, tmp_path):
  proc, workers = _start(repo_root, tmp_path, "checkpoint")
  os.kill(workers["job1"], signal.SIGKILL)
  code, lines, seconds = _finish(proc)
  assert code == 1 and seconds < 5
  assert lines == [
    "error: the worker running job1 was killed by SIGKILL; the others stopped (2 run(s) "
    "checkpointed); re-run the same command to resume"
  ]
  assert _gone(workers["job0"])


def test_a_job_error_is_its_one_line_after_the_others_checkpointed(repo_root, tmp_path):
  proc, _ = _start(repo_root, tmp_path, "fail", wait=False)
  code, lines, _ = _finish(proc, timeout=60)
  assert code == 1
  assert lines == ["error: job0 cannot run: a one-line error from a worker"]
  started = dict(name.split(".") for name in os.listdir(tmp_path / "markers"))
  assert all(_gone(int(pid)) for pid in started.values())


def test_no_worker_outlives_its_parent_killed_by_sigkill(repo_root, tmp_path):
  proc, workers = _start(repo_root, tmp_path, "checkpoint")
  proc.kill()
  proc.communicate()
  assert all(_gone(pid, within=5) for pid in workers.values())


def test_a_second_signal_kills_the_workers_and_exits_at_once(repo_root, tmp_path):
  proc, workers = _start(repo_root, tmp_path, "stubborn", jobs=2)
  proc.send_signal(signal.SIGTERM)
  time.sleep(0.5)
  assert proc.poll() is None  # the workers took the first one and are still busy
  proc.send_signal(signal.SIGINT)
  code, lines, seconds = _finish(proc)
  assert code == 143 and seconds < 2
  assert lines == [
    "SIGINT while stopping: the workers were killed at once; re-run the same command to "
    "resume from each run's newest complete checkpoint"
  ]
  assert all(_gone(pid) for pid in workers.values())


def test_outputs_written_whole_before_a_signal_stops_the_process(tmp_path):
  written = []
  try:
    with pytest.raises(preemption.Interrupted) as stopped:
      with preemption.whole("after the report was written"):
        preemption._State.received = signal.SIGHUP  # as if SIGHUP arrived mid-write
        written.append("report.json")
        written.append("report.md")
  finally:
    preemption.reset()
  assert written == ["report.json", "report.md"]
  assert stopped.value.exit_code == 129
  assert str(stopped.value) == (
    "interrupted by SIGHUP after the report was written; re-run the same command to go on"
  )


def test_sighup_while_training_checkpoints_at_the_stop_and_exits_129(tmp_path, monkeypatch):
  """The real handler, in this process: SIGHUP is taken like SIGTERM."""
  import threading

  from research.config import load_config
  from research.training.loop import train_and_evaluate

  config = load_config(
    "experiments/mnist1d_cnn.py:tiny",
    ["num_steps=1000", "log_every=10", "eval_every=500", "checkpoint_every=500"],
  )
  workdir = str(tmp_path / "run")
  handlers = {s: signal.getsignal(s) for s in preemption.HANDLED}
  for key in ("installed", "finished", "quiet"):
    monkeypatch.setattr(preemption._State, key, getattr(preemption._State, key))
  preemption._State.installed = False

  def hang_up_once_training():  # config.json: inside the loop's deferred(), before the 1st chunk
    while not os.path.exists(os.path.join(workdir, "config.json")):
      time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGHUP)

  preemption.install()
  try:
    threading.Thread(target=hang_up_once_training, daemon=True).start()
    with pytest.raises(preemption.Interrupted) as stopped:
      train_and_evaluate(config, workdir, progress=False)
  finally:
    for s, handler in handlers.items():
      signal.signal(s, handler)
    preemption.reset()
  step = stopped.value.step
  assert stopped.value.exit_code == 129 and 0 < step < 1000 and step % 500
  assert str(stopped.value) == (
    f"interrupted by SIGHUP at step {step}; checkpoint saved; re-run the same command to resume"
  )
  assert (
    max(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()) == step
  )


@pytest.mark.slow
def test_train_vs_infer_checkpoints_while_training_and_writes_nothing_half_while_measuring(
  repo_root, tmp_path
):
  workdir = str(tmp_path / "run")
  cmd = [
    sys.executable,
    "-u",
    os.path.join(repo_root, "scripts", "train_vs_infer.py"),
    "--config",
    os.path.join(repo_root, "experiments/mnist1d_cnn.py:tiny"),
    "--config.num_steps=2000",
    "--config.log_every=10",
    "--config.eval_every=100",
    "--config.checkpoint_every=100",
    "--workdir",
    workdir,
    "--no-progress",
    "--engines",
    "jax",
    "--no-edge",
    "--max-batch",
    "8",
    "--latency-calls",
    "50",
  ]

  def saved():  # a first checkpoint: compiled and training
    ckpts = os.path.join(workdir, "checkpoints")
    return os.path.isdir(ckpts) and any(s.isdigit() for s in os.listdir(ckpts))

  def stopped_when(printed, then=lambda: True):
    """SIGTERM once stdout has a line with `printed` and then `then()`: (exit status, stderr
    lines, seconds to exit)."""
    proc = subprocess.Popen(
      cmd,
      env={**os.environ, "PYTHONPATH": repo_root},
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    line = ""
    while printed not in line:
      line = proc.stdout.readline()
      assert line, proc.communicate()
    while not then():
      assert proc.poll() is None, proc.communicate()
      time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    return _finish(proc)

  code, lines, seconds = stopped_when("training mnist1d_cnn", saved)
  step = max(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert code == 143 and seconds < 10 and 100 <= step < 2000
  assert lines == [
    f"interrupted by SIGTERM at step {step}; checkpoint saved; re-run the same command to resume"
  ]

  code, lines, seconds = stopped_when("timing inference")
  assert code == 143 and seconds < 10
  assert lines == ["interrupted by SIGTERM after training had finished (the run is complete)"]
  assert os.path.exists(os.path.join(workdir, "summary.json"))
  assert not [n for n in os.listdir(workdir) if n.startswith("report") or ".tmp" in n]


def test_a_signal_landing_mid_import_exits_with_its_line_not_an_import_error(repo_root):
  """A Ctrl-C at startup can land while research.outputs is half imported; the exit path must
  not import the lock module then (it did: ImportError, 22 lines, exit 1 instead of 130)."""
  code = (
    "import sys, types\n"
    "from research.training import preemption\n"
    "sys.modules['research.outputs'] = types.ModuleType('research.outputs')  # half imported\n"
    "preemption.exit_now(130)\n"
  )
  env = {**os.environ, "PYTHONPATH": repo_root}
  done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
  assert done.returncode == 130 and done.stderr == "", done.stderr
