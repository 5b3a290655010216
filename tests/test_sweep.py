"""Sweeps: grid expansion, grouping, runs side by side against runs alone, skip and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from research.config import ConfigError, check_side_by_side, load_config
from research.training.loop import train_and_evaluate, train_runs
from research.training.sweep import SweepError, expand, load_runs, parse_sweep, plan_jobs

CNN = "experiments/mnist1d_cnn.py"
CNN_TINY = f"{CNN}:tiny"  # 40 steps


def test_grid_expands_every_combination_in_flag_order():
  axes = parse_sweep(["optimizer.learning_rate=1e-3,3e-3,1e-2", "seed=0,1"])
  runs = expand(axes, ["num_steps=20"])
  assert len(runs) == 6 and len({r.name for r in runs}) == 6
  assert runs[0].name == "learning_rate=1e-3_seed=0"
  assert runs[1].values == {"optimizer.learning_rate": "1e-3", "seed": "1"}
  assert runs[5].overrides == ("num_steps=20", "optimizer.learning_rate=1e-2", "seed=1")
  # Leaf names that collide keep their dotted keys.
  clash = expand(parse_sweep(["seed=0,1", "data.seed=1,2"]))
  assert clash[0].name == "seed=0_data.seed=1"


@pytest.mark.parametrize(
  "flags, message",
  [
    ([], "no --sweep given"),
    (["seed"], "not of the form key=value1,value2"),
    (["seed=0,,1"], "not of the form"),
    (["seed=0,1", "seed=2"], "names 'seed' twice"),
    (["seed=1,1"], "repeats a value"),
  ],
)
def test_bad_sweep_flags(flags, message):
  with pytest.raises(SweepError, match=message):
    parse_sweep(flags)


def test_bad_values_name_their_run():
  runs = expand(parse_sweep(["optimizer.learning_rate=1e-3,fast"]))
  with pytest.raises(SweepError, match="run learning_rate=fast: config key .* expects float"):
    load_runs(CNN, runs)


def test_runs_group_only_when_one_program_can_train_them(tmp_path):
  axes = ["optimizer.learning_rate=1e-3,1e-2", "model.channels=8,16", "seed=0,1"]
  runs = expand(parse_sweep(axes))
  configs = load_runs(CNN_TINY, runs)
  workdirs = [str(tmp_path / r.name) for r in runs]
  jobs = plan_jobs(configs, workdirs, workers=1)
  groups = sorted(sorted(runs[i].values["model.channels"] for i in ix) for _, ix in jobs)
  assert groups == [["16"] * 4, ["8"] * 4]  # channels change the program; lr and seed do not
  # One group per worker as they stand; with four workers each group is cut in two.
  assert sorted(len(ix) for _, ix in plan_jobs(configs, workdirs, workers=2)) == [4, 4]
  assert sorted(len(ix) for _, ix in plan_jobs(configs, workdirs, workers=4)) == [2, 2, 2, 2]
  with pytest.raises(ConfigError, match="runs differ in model.channels"):
    check_side_by_side([configs[0], configs[2]])
  decay = load_config(CNN_TINY, [*runs[0].overrides, "optimizer.weight_decay=1e-4"])
  with pytest.raises(ConfigError, match="zero in one run"):
    check_side_by_side([configs[0], decay])


@pytest.mark.slow  # five runs; test_a_diverging_member_stops_alone trains a group
def test_side_by_side_runs_equal_runs_alone(tmp_path, tiny_cnn_run):
  """To float tolerance, not bitwise: vmapped, XLA:CPU computes the gradient's matrix products
  batched over runs, with another summation order (about one ulp at the first update)."""
  configs = [
    load_config(CNN_TINY, [f"optimizer.learning_rate={lr}", f"seed={s}"])
    for lr, s in ((1e-2, 0), (3e-3, 1), (3e-2, 2))
  ]
  assert configs[0].to_dict() == load_config(CNN_TINY).to_dict()  # tiny_cnn_run's: trained alone
  together = train_runs(configs, [str(tmp_path / f"g{i}") for i in range(3)], progress=False)
  for i, c in enumerate(configs):
    alone = (
      tiny_cnn_run[1] if i == 0 else train_and_evaluate(c, str(tmp_path / f"a{i}"), progress=False)
    )
    assert together[i]["trained_side_by_side"] == 3 and alone["trained_side_by_side"] == 1
    np.testing.assert_allclose(together[i]["final_test_loss"], alone["final_test_loss"], rtol=1e-4)
    assert together[i]["final_test_accuracy"] == pytest.approx(
      alone["final_test_accuracy"], abs=2e-3
    )
  losses = {round(s["final_test_loss"], 3) for s in together}
  assert len(losses) == 3  # each member really had its own learning rate and seed


def test_a_diverging_member_stops_alone(tmp_path):
  configs = [
    load_config(CNN_TINY, ["optimizer.name=sgd", f"optimizer.learning_rate={lr}"])
    for lr in (1e-2, 1e6)
  ]
  dirs = [str(tmp_path / "ok"), str(tmp_path / "diverged")]
  ok, bad = train_runs(configs, dirs, progress=False, keep_going=True)
  assert ok["status"] == "finished" and ok["steps"] == 40
  assert bad["status"] == "diverged" and bad["diverged_at_step"] <= 40


def sweep_cmd(repo_root, workdir, *extra):
  return [
    sys.executable,
    os.path.join(repo_root, "scripts", "sweep.py"),
    "--config",
    os.path.join(repo_root, CNN),
    "--sweep",
    "model.channels=8,16",
    "--sweep",
    "seed=0,1",
    "--workdir",
    workdir,
    "--config.num_steps=200",
    "--config.log_every=10",
    "--config.eval_every=10",
    "--config.checkpoint_every=10",
    "--config.data.validation_size=200",
    *extra,
  ]


@pytest.mark.slow
def test_killed_sweep_resumes_and_skips_finished_runs(repo_root, tmp_path):
  workdir = str(tmp_path / "sweep")
  env = {**os.environ, "PYTHONPATH": repo_root}
  # Channels make two groups (2 runs each, seeds side by side); one worker trains them one after
  # the other: kill during the second.
  proc = subprocess.Popen(
    sweep_cmd(repo_root, workdir, "--workers", "1"),
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    start_new_session=True,
  )
  first = [os.path.join(workdir, f"channels=8_seed={s}", "summary.json") for s in (0, 1)]
  second = os.path.join(workdir, "channels=16_seed=0", "checkpoints")
  deadline = time.time() + 240
  while time.time() < deadline and not (
    all(map(os.path.exists, first)) and os.path.isdir(second) and os.listdir(second)
  ):
    time.sleep(0.2)
  os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: main and worker
  proc.wait()
  assert all(map(os.path.exists, first)), "the first group never finished"
  finished_before = {
    n: os.path.getmtime(os.path.join(workdir, n, "summary.json"))
    for n in os.listdir(workdir)
    if os.path.exists(os.path.join(workdir, n, "summary.json"))
  }
  assert len(finished_before) == 2

  out = subprocess.run(
    sweep_cmd(repo_root, workdir), env=env, capture_output=True, text=True, timeout=400
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert f"4 runs: {len(finished_before)} finished" in out.stdout
  for n, mtime in finished_before.items():  # skipped: not trained again
    assert os.path.getmtime(os.path.join(workdir, n, "summary.json")) == mtime
  for n in os.listdir(workdir):
    if n.startswith("channels="):
      with open(os.path.join(workdir, n, "summary.json")) as f:
        s = json.load(f)
      assert s["steps"] == 200 and s["best_step"] is not None
  with open(os.path.join(workdir, "sweep.csv")) as f:
    rows = f.read().splitlines()
  assert rows[0].startswith("run,model.channels,seed,status") and len(rows) == 5
  again = subprocess.run(sweep_cmd(repo_root, workdir), env=env, capture_output=True, text=True)
  assert again.returncode == 0 and "4 runs: 4 finished, 0 to train" in again.stdout


@pytest.mark.slow
def test_sigterm_to_a_sweep_checkpoints_every_run_and_the_rerun_ends_as_if_uninterrupted(
  repo_root, tmp_path
):
  workdir, reference = str(tmp_path / "sweep"), str(tmp_path / "reference")
  env = {**os.environ, "PYTHONPATH": repo_root}

  # Two runs, one per worker: each trains alone, so a resume is bitwise. The sweep gets every
  # CPU of the machine back (under xdist this process is pinned to one), set from inside the
  # child as preexec_fn is unsafe in a threaded process.
  cpus = sorted(int(c) for c in os.environ["TEST_MACHINE_CPUS"].split(","))
  if len(cpus) < 2:
    pytest.skip("needs two CPUs: one pinned worker per run")
  launcher = (
    f"import os, runpy, sys; os.sched_setaffinity(0, {cpus!r}); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
  )

  def cmd(w):
    return [
      sys.executable,
      "-c",
      launcher,
      os.path.join(repo_root, "scripts", "sweep.py"),
      "--config",
      os.path.join(repo_root, CNN),
      "--sweep",
      "seed=0,1",
      "--workers",
      "2",
      "--workdir",
      w,
      "--config.num_steps=1200",
      "--config.log_every=10",
      "--config.eval_every=100",
      "--config.checkpoint_every=100",
      "--config.data.validation_size=200",
    ]

  proc = subprocess.Popen(cmd(workdir), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  runs = [os.path.join(workdir, f"seed={s}") for s in (0, 1)]
  deadline = time.time() + 240

  def saved(run):  # a first checkpoint: compiled and training
    ckpts = os.path.join(run, "checkpoints")
    return os.path.isdir(ckpts) and any(s.isdigit() for s in os.listdir(ckpts))

  def finished(run):
    return os.path.exists(os.path.join(run, "summary.json"))

  # On a busy machine one run can finish before the other saves its first checkpoint: the stop
  # then interrupts one run, and the message counts the finished job apart.
  while not all(saved(r) or finished(r) for r in runs):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  t = time.time()
  _, err = proc.communicate(timeout=30)
  if proc.returncode == 0:
    pytest.skip("both runs finished before the stop could be sent")
  assert proc.returncode == 143 and time.time() - t < 10
  lines = [s for s in err.decode().splitlines() if s.strip() and not s.startswith("sweep:")]
  done = [r for r in runs if finished(r)]
  assert len(done) < 2
  expected = f"interrupted by SIGTERM: {2 - len(done)} run(s) checkpointed"
  if done:
    expected += f", {len(done)} of 2 job(s) finished"
  assert lines == [expected + "; re-run the same command to resume"]
  for run in runs:
    if run in done:
      continue
    steps = [int(s) for s in os.listdir(os.path.join(run, "checkpoints")) if s.isdigit()]
    assert 100 <= max(steps) < 1200, steps

  again = subprocess.run(cmd(workdir), env=env, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-2000:]
  alone = subprocess.run(cmd(reference), env=env, capture_output=True, text=True, timeout=300)
  assert alone.returncode == 0, alone.stderr[-2000:]
  for s in (0, 1):
    with open(os.path.join(workdir, f"seed={s}", "summary.json")) as f:
      resumed = json.load(f)
    with open(os.path.join(reference, f"seed={s}", "summary.json")) as f:
      expected = json.load(f)
    figures = [k for k in expected if k.startswith(("final_", "best_")) or k == "steps"]
    assert {k: resumed[k] for k in figures} == {k: expected[k] for k in figures}
