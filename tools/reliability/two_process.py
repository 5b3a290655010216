"""Two processes on one machine over 127.0.0.1: they train as one, die together, and resume.

`run_two_process_trial` starts `scripts/train.py --distributed` as two processes of one CPU
device each (the coordinator on a free loopback port, one shared workdir) and judges what a user
sees:

- uninterrupted, they end bitwise where one process with two devices ends (final params, the
  summary's test figures, every step's train loss as TensorBoard reads it);
- one of them SIGKILLed after the first checkpoint: the other exits within the peer timeout with
  exactly one stderr line naming the lost process;
- the same two commands again resume the killed run and end bitwise where the uninterrupted run
  ends.

Data: a fixed synthetic 40-feature, 10-class set written as an .npz (the MNIST-1D generator would
take 4-12 s in each process). Each run is pinned to its own core where the machine has them, and
the runs that do not depend on each other run side by side: on 2 cores shared with other work
(load average 6-10) the whole trial took 84-100 s, the test's shorter form 57-100 s. Measured
there: the survivor of process 1 exited 3.1-5.6 s after the kill (peer timeout 5 s), the
survivor of process 0 0.3-0.8 s after; two processes x 1 device trained 33-40 steps/s against
1,700 for one process x 2 devices (each step's all-reduce goes through gloo over TCP: 3.5 ms for
one of 15,210 floats).
"""

from __future__ import annotations

import os
import re
import socket
import time
from typing import Any, Sequence

import numpy as np

from tools.reliability.harness import (
  Launch,
  TrialSetup,
  compare,
  kill_all,
  read_outcome,
  readable,
  steps_on_disk,
  wait_until,
)

CONFIG = "experiments/mnist1d_mlp.py"
LOST = re.compile(r"^error: lost process (\d+)\b.* re-run the same command")
LOG_EVERY = 10  # steps per chunk: a checkpoint (and the kill) comes early
STDERR_SETTLE_SECONDS = 2.0  # the stderr filter writes its line just after the process exits


def run_two_process_trial(
  tmp: str,
  timeout: float = 240.0,
  num_steps: int = 200,
  peer_timeout: int = 5,
  victim: int = 1,
  uninterrupted: bool = True,
) -> dict[str, Any]:
  """Runs the trial in `tmp`; returns its results, `ok` and `why` (every failed check) first.

  `timeout` bounds each run. `victim` is the process killed (1: its survivor, the coordinator,
  waits out the heartbeat timeout; 0: the survivor loses the coordinator at once).
  `uninterrupted=False` skips the uninterrupted two-process run: the resumed run is then compared
  with the one-process run directly, which checks both claims at once in less time (the test).
  """
  os.makedirs(tmp, exist_ok=True)
  setup = _setup(tmp, num_steps, peer_timeout)
  cores = _cores()
  why: list[str] = []
  out: dict[str, Any] = {"num_steps": num_steps, "peer_timeout_seconds": peer_timeout}
  t0 = time.monotonic()
  try:
    # Side by side: the reference (1 process x 2 devices), the run to kill, the uninterrupted
    # pair, and the resume as soon as the kill is judged. Only the resume waits for another.
    one = [_launch(setup, tmp, "one_process", None, 0, cores[0], devices=2)]
    killed_dir = os.path.join(tmp, "killed")
    killed = _launch_pair(setup, tmp, "killed", cores)
    pair = _launch_pair(setup, tmp, "two_process", cores) if uninterrupted else []

    out.update(_kill_and_watch(killed, killed_dir, victim, peer_timeout, timeout, why))
    resumed = _launch_pair(setup, tmp, "killed", cores, log="resumed")  # while the others run
    for name, launches in {"one_process": one, "two_process": pair, "resumed": resumed}.items():
      if launches:
        out[f"{name}_exit_statuses"], out[f"{name}_seconds"] = _finish(launches, timeout, why)
    out["resumed_stderr"] = [line for launch in resumed for line in launch.stderr_lines()][-4:]
    why += readable(out["resumed_stderr"])

    reference = _outcome(tmp, "one_process")
    if reference is None or reference.summary is None or reference.error:
      why.append("the one-process reference did not finish")
    else:
      out["final_test_loss"] = reference.summary.get("final_test_loss")
      runs = {"two_process": "two_process"} if uninterrupted else {}
      runs["resumed"] = "killed"  # the killed run's workdir, resumed to the end
      for name, run in runs.items():
        outcome = _outcome(tmp, run)
        differ = compare(reference, outcome, num_steps) if outcome else [f"no {run} workdir"]
        out[f"{name}_matches_one_process"] = not differ
        why += [f"{name} vs one process: {d}" for d in differ]
  finally:
    kill_all(under=tmp)
  out["seconds"] = round(time.monotonic() - t0, 2)
  return {"ok": not why, "why": "; ".join(why), **out}


def _outcome(tmp: str, run: str):
  workdir = os.path.join(tmp, run)
  return read_outcome(workdir) if os.path.isdir(workdir) else None


def _kill_and_watch(
  pair: list[Launch], workdir: str, victim: int, peer_timeout: int, timeout: float, why: list
) -> dict[str, Any]:
  """Kills `victim` after the first checkpoint; how and when the survivor ended."""
  survivor = pair[1 - victim]
  if not wait_until(pair[victim], lambda: bool(steps_on_disk(workdir)), timeout):
    why.append("the run to kill exited or stalled before its first checkpoint")
    for launch in pair:
      launch.kill()
    return {"killed_process": victim, "kill_step": None}
  step = max(steps_on_disk(workdir))
  killed_at = pair[victim].signal(9)
  rc = survivor.wait(peer_timeout + 60)
  seconds = time.monotonic() - killed_at
  pair[victim].wait(5)
  if rc is None:
    survivor.kill()
    why.append(f"the survivor (process {1 - victim}) still ran {seconds:.0f} s after the kill")
  lines = _settled_stderr(survivor)
  result = {
    "killed_process": victim,
    "kill_step": step,
    "survivor_exit_status": rc,
    "survivor_exit_seconds": round(seconds, 2),
    "survivor_stderr": lines,
  }
  if rc == 0 or os.path.exists(os.path.join(workdir, "summary.json")):
    why.append(f"the killed run finished anyway (kill at step {step} came too late)")
  elif rc is not None:
    if seconds > peer_timeout + 10:
      why.append(f"the survivor took {seconds:.1f} s to exit (peer timeout {peer_timeout} s)")
    match = LOST.match(lines[0]) if len(lines) == 1 else None
    if match is None or int(match.group(1)) != victim:
      why.append(f"the survivor's stderr is not one line naming process {victim}: {lines[:3]}")
  return result


def _settled_stderr(launch: Launch) -> list[str]:
  deadline = time.monotonic() + STDERR_SETTLE_SECONDS
  while time.monotonic() < deadline and not launch.stderr_lines():
    time.sleep(0.05)
  time.sleep(0.1)  # the filter's last write, if it was mid-way
  return launch.stderr_lines()


def _finish(launches: Sequence[Launch], timeout: float, why: list) -> tuple[list, float]:
  statuses = []
  for launch in launches:
    left = max(1.0, launch.started + timeout - time.monotonic())
    rc = launch.wait(left)
    if rc is None:
      launch.kill()
    statuses.append(rc)
  seconds = round(max(time.monotonic() - launch.started for launch in launches), 2)
  if any(rc != 0 for rc in statuses):
    lines = [line for launch in launches for line in launch.stderr_lines()]
    name = os.path.basename(launches[0].log)
    why.append(f"{name} exited {statuses}: {lines[-2:] or '(no stderr)'}")
  return statuses, seconds


def _setup(tmp: str, num_steps: int, peer_timeout: int) -> TrialSetup:
  data = os.path.join(tmp, "data.npz")
  if not os.path.exists(data):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(40, 10))
    x, x_test = rng.normal(size=(1024, 40)), rng.normal(size=(256, 40))
    y = np.argmax(x @ w + rng.normal(size=(1024, 10)), 1)
    np.savez(
      data,
      x=x.astype(np.float32),
      y=y.astype(np.int32),
      x_test=x_test.astype(np.float32),
      y_test=np.argmax(x_test @ w, 1).astype(np.int32),
    )
  every = max(LOG_EVERY, num_steps // 4 // LOG_EVERY * LOG_EVERY)  # a multiple of log_every
  overrides = (
    "data.name=npz",
    f"data.path={data}",
    f"num_steps={num_steps}",
    "batch_size=64",
    f"log_every={LOG_EVERY}",
    f"eval_every={every}",
    f"checkpoint_every={every}",
    "eval_batch_size=256",
    "num_devices=0",
    f"peer_timeout_seconds={peer_timeout}",
  )
  return TrialSetup(CONFIG, overrides, num_steps, every)


def _launch_pair(
  setup: TrialSetup,
  tmp: str,
  run: str,
  cores: list[int],
  log: str = "",
  devices: tuple[int, int] = (1, 1),
  overrides: Sequence[str] = (),
) -> list[Launch]:
  """Processes 0 and 1 of one run, on a fresh loopback port."""
  address = f"127.0.0.1:{_free_port()}"
  return [
    _launch(setup, tmp, run, address, i, cores[i % len(cores)], devices[i], log, overrides)
    for i in (0, 1)
  ]


def _launch(
  setup: TrialSetup,
  tmp: str,
  run: str,
  address: str | None,
  index: int,
  core: int,
  devices: int = 1,
  log: str = "",
  overrides: Sequence[str] = (),
) -> Launch:
  """One process with `devices` CPU devices; with `address`, process `index` of two."""
  env = setup.env(os.path.join(tmp, "jax_cache"))  # the resumed pair reuses the killed's programs
  flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
  env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
  env.pop("JAX_NUM_CPU_DEVICES", None)
  command = setup.command(os.path.join(tmp, run)) + [f"--config.{o}" for o in overrides]
  if address is not None:
    env.update(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(index))
    command.append("--distributed")
  return Launch(command, env, os.path.join(tmp, f"{log or run}.p{index}"), core)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cores() -> list[int]:
  """The machine's cores (the test suite records them before pinning its workers to one)."""
  listed = os.environ.get("TEST_MACHINE_CPUS", "")
  cores = [int(c) for c in listed.split(",") if c.strip().isdigit()]
  return cores or sorted(os.sched_getaffinity(0))
