"""Which core `--threads 1` pins a process to: concurrent jobs spread instead of sharing core 0."""

import os
import subprocess
import sys
import time

import pytest

from research import runtime

MACHINE_CPUS = sorted(int(c) for c in os.environ["TEST_MACHINE_CPUS"].split(","))  # conftest


def test_a_process_index_picks_its_own_core_whatever_else_is_pinned():
  busy = {0: 5}
  assert [runtime.choose_core([0, 1], i, busy) for i in range(4)] == [0, 1, 0, 1]
  assert runtime.choose_core([2, 5, 7], 4) == 5


def test_without_an_index_the_least_pinned_core_wins_the_lowest_on_a_tie():
  assert runtime.choose_core([0, 1]) == 0
  assert runtime.choose_core([0, 1], pinned={0: 1}) == 1
  assert runtime.choose_core([0, 1], pinned={0: 2, 1: 1}) == 1
  assert runtime.choose_core([0, 1], pinned={0: 1, 1: 1}) == 0
  assert runtime.choose_core([1, 3], pinned={0: 0, 1: 4, 3: 2}) == 3  # only allowed cores count


def _status(path, cores, kernel=False):
  os.makedirs(path)
  memory = "" if kernel else "VmSize:\t  1000 kB\n"
  with open(os.path.join(path, "status"), "w") as f:
    f.write(f"Name:\tx\nState:\tS (sleeping)\n{memory}Cpus_allowed_list:\t{cores}\nMore:\t1\n")


def test_pinned_counts_reads_user_processes_pinned_to_one_core(tmp_path):
  _status(tmp_path / "10", "1")
  _status(tmp_path / "11", "1")
  _status(tmp_path / "12", "0")
  _status(tmp_path / "13", "0-1")  # free to move: claims nothing
  _status(tmp_path / "14", "0", kernel=True)  # a per-CPU kernel thread
  _status(tmp_path / str(os.getpid()), "0")  # the caller itself
  os.makedirs(tmp_path / "self")
  assert runtime._pinned_counts(str(tmp_path)) == {1: 2, 0: 1}


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity")
def test_pinned_counts_sees_a_live_pinned_process():
  core = MACHINE_CPUS[-1]
  child = subprocess.Popen(
    [
      sys.executable,
      "-c",
      f"import os, time; os.sched_setaffinity(0, {{{core}}}); "
      "print('pinned', flush=True); time.sleep(60)",
    ],
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert child.stdout.readline().strip() == "pinned"
    with open(f"/proc/{child.pid}/status") as f:
      assert f"Cpus_allowed_list:\t{core}\n" in f.read()
    assert runtime._pinned_counts().get(core, 0) >= 1
  finally:
    child.kill()
    child.wait()


def test_one_process_at_a_time_chooses_a_core():
  """Two processes starting together must not both read the counts before either has pinned."""
  holder = subprocess.Popen(
    [
      sys.executable,
      "-c",
      "import time; from research import runtime\n"
      "with runtime._choosing_alone():\n  print('held', flush=True); time.sleep(1.0)",
    ],
    stdout=subprocess.PIPE,
    text=True,
    env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))},
  )
  try:
    assert holder.stdout.readline().strip() == "held"
    start = time.monotonic()
    with runtime._choosing_alone(wait_seconds=10):
      waited = time.monotonic() - start
    assert waited > 0.3  # it waited for the holder to let go
  finally:
    holder.kill()
    holder.wait()
  start = time.monotonic()
  with runtime._choosing_alone(wait_seconds=10):
    assert time.monotonic() - start < 1.0  # free again once the holder has gone
