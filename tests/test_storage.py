"""Storage that fails, signals to commands that train nothing, and the setups that used to end in
a traceback (issue 24): each is one line, within seconds, and leaves nothing half-written.

- research/storage.py finds a full disk, a read-only directory or a file in the way in whatever
  was raised, and `cli.run_main` prints it as one `error:` line;
- a checkpoint save into a read-only or full directory fails at once, in one line (it had
  stalled 300 s, then printed ~400 lines);
- `outputs.replacing` swaps a directory of outputs in whole, or leaves the old one;
- a command that trains nothing unwinds on SIGTERM, SIGHUP and Ctrl-C: 143, 129, 130, one line;
- JAX_PLATFORMS naming a missing backend, two `--distributed` processes with different configs,
  and out-of-range step counts and decay rates are one line each.

Read-only and full file systems are real where this process may mount (root): a read-only bind
mount and a small tmpfs. As root, `chmod -w` would not stop a write, so elsewhere those tests
skip, naming mount's reason.
"""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from research import outputs, storage
from research.config import ConfigError, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- Finding a storage failure in what was raised -------------------------------------------------


class _Group(Exception):
  """An exception group (Python 3.11's ExceptionGroup, asyncio's, TaskGroup's): `exceptions`."""

  def __init__(self, exceptions):
    super().__init__("several failed")
    self.exceptions = exceptions


def test_a_storage_failure_is_found_by_its_errno_through_chains_and_groups(tmp_path):
  full = OSError(errno.ENOSPC, "No space left on device")
  assert storage.failure(full) == (errno.ENOSPC, "")
  assert "is full" in storage.describe(full)
  ro_path = str(tmp_path / "checkpoints" / "200.orbax-checkpoint-tmp")
  (tmp_path / "checkpoints").mkdir()
  try:
    try:
      raise OSError(errno.EROFS, "Read-only file system", ro_path)
    except OSError as e:
      raise ValueError("save failed") from e
  except ValueError as wrapped:
    line = storage.describe(wrapped, "checkpoint step 200 not saved")
  assert line.startswith(f"checkpoint step 200 not saved: {tmp_path / 'checkpoints'} is read-only")
  assert "make it writable" in line
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  group = _Group([KeyError("x"), NotADirectoryError(errno.ENOTDIR, "no", str(blocker / "s" / "f"))])
  assert storage.describe(group).startswith(f"{blocker} is a file where a directory should be")
  denied = PermissionError(errno.EACCES, "Permission denied", "/some/file")
  assert storage.describe(denied).startswith("permission denied on /some/file: make it")
  assert "is a directory where a file should be" in storage.describe(
    IsADirectoryError(errno.EISDIR, "Is a directory", "/x")
  )


def test_tensorstore_text_alone_is_enough_and_other_errors_are_not_storage():
  text = (
    'RESOURCE_EXHAUSTED: Error writing local file "/w/checkpoints/300.orbax-checkpoint-tmp/'
    '_sharding": Failed to write 1327 bytes to file 28: No space left on device '
    "[os_error_code='28']"
  )
  assert storage.failure(ValueError(text)) == (
    errno.ENOSPC,
    "/w/checkpoints/300.orbax-checkpoint-tmp/_sharding",
  )
  assert storage.describe(ValueError(text), where="/w/checkpoints").startswith(
    "the file system of /w/checkpoints is full"
  )
  # Not storage: a process call's EPERM (no path), a missing file, a bug.
  for e in (
    PermissionError(errno.EPERM, "Operation not permitted"),
    FileNotFoundError(2, "x", "/y"),
    ValueError("boom"),
  ):
    assert storage.describe(e) is None


def test_run_main_prints_a_storage_failure_as_one_line(capsys, monkeypatch):
  from research import cli
  from research.training import preemption

  monkeypatch.setattr(preemption, "install", lambda *a, **k: None)  # pytest keeps its handlers

  def main():
    try:
      raise OSError(errno.ENOSPC, "No space left on device", "/out/bench.json")
    except OSError as e:
      raise RuntimeError("writer thread failed") from e

  with pytest.raises(SystemExit) as done:
    cli.run_main(main)
  assert done.value.code == 1
  assert capsys.readouterr().err.splitlines() == [
    "error: the file system of /out/bench.json is full (no space left on device): free space on "
    "it (or write elsewhere) and re-run the same command"
  ]
  with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
    cli.run_main(lambda: 1 / 0)


# --- Atomic writers and directories replaced whole ------------------------------------------------


def test_a_failed_atomic_write_names_its_target_and_leaves_no_temporary(tmp_path, monkeypatch):
  def full(source, target):
    raise OSError(errno.ENOSPC, "No space left on device")  # as a write to a full disk: no name

  monkeypatch.setattr(outputs.os, "replace", full)
  target = tmp_path / "p.npy"
  with pytest.raises(OSError) as raised:
    outputs.write_bytes(str(target), b"x" * 100)
  assert raised.value.filename == str(target)
  assert os.listdir(tmp_path) == []


def _tree(root):
  return {
    os.path.relpath(os.path.join(d, n), root): open(os.path.join(d, n)).read()
    for d, _, names in os.walk(root)
    for n in names
  }


@pytest.fixture
def old_out(tmp_path):
  out = tmp_path / "bench"
  (out / "loadgen").mkdir(parents=True)
  (out / "bench.json").write_text("old")
  (out / "loadgen" / "old.txt").write_text("old")
  (out / "notes.txt").write_text("mine")
  return out


@pytest.mark.parametrize("exchange", [True, False], ids=["rename-exchange", "two-renames"])
def test_a_directory_is_replaced_whole(old_out, monkeypatch, exchange):
  if not exchange:
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
  with outputs.replacing(str(old_out), remake=("loadgen",)) as staging:
    assert _tree(staging) == {"bench.json": "old", "notes.txt": "mine"}  # loadgen is re-made
    assert _tree(old_out)["bench.json"] == "old"  # untouched while the block runs
    (open(os.path.join(staging, "bench.json"), "w")).write("new")
    os.makedirs(os.path.join(staging, "loadgen", "jax"))
    open(os.path.join(staging, "loadgen", "jax", "log.txt"), "w").write("new")
  assert _tree(old_out) == {"bench.json": "new", "notes.txt": "mine", "loadgen/jax/log.txt": "new"}
  assert os.listdir(old_out.parent) == ["bench"]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError], ids=["signal", "full-disk"])
def test_a_directory_is_left_as_it_was_when_the_block_fails(old_out, stop):
  before = _tree(old_out)
  with pytest.raises(stop) as raised:
    with outputs.replacing(str(old_out), remake=("loadgen",)) as staging:
      open(os.path.join(staging, "bench.json"), "w").write("half")
      if stop is OSError:
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(staging, "x.png"))
      raise KeyboardInterrupt
  assert _tree(old_out) == before and os.listdir(old_out.parent) == ["bench"]
  if stop is OSError:  # named where it was going, not by its temporary
    assert raised.value.filename == str(old_out / "x.png")


def test_a_temporary_left_by_a_killed_process_is_removed_by_the_next(old_out):
  dead = subprocess.Popen([sys.executable, "-c", ""])
  dead.wait()
  stale = old_out.parent / f".bench.tmp{dead.pid}"
  stale.mkdir()
  with outputs.replacing(str(old_out)):
    pass
  assert os.listdir(old_out.parent) == ["bench"]


# --- Signals to a command that trains nothing -----------------------------------------------------

_WRITER = """
import os, sys, time
from research import outputs
from research.cli import run_main

def main():
  with outputs.replacing(sys.argv[1]) as staging:
    open(os.path.join(staging, "bench.json"), "w").write("half")
    print("writing", flush=True)
    time.sleep(60)

run_main(main)
"""


@pytest.mark.parametrize(
  "signum, code, line",
  [
    (signal.SIGTERM, 143, "stopped by SIGTERM before the end; re-run the same command"),
    (signal.SIGHUP, 129, "stopped by SIGHUP before the end; re-run the same command"),
    (signal.SIGINT, 130, "interrupted by SIGINT (Ctrl-C) before the end; re-run the same command"),
  ],
  ids=["SIGTERM", "SIGHUP", "SIGINT"],
)
def test_a_signal_unwinds_a_command_and_its_outputs_stay_old(old_out, signum, code, line):
  before = _tree(old_out)
  proc = subprocess.Popen(
    [sys.executable, "-c", _WRITER, str(old_out)],
    env={**os.environ, "PYTHONPATH": REPO},
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  assert proc.stdout.readline().strip() == "writing"
  proc.send_signal(signum)
  _, stderr = proc.communicate(timeout=30)
  assert proc.returncode == code
  assert stderr.splitlines() == [line]
  assert _tree(old_out) == before and os.listdir(old_out.parent) == ["bench"]


# --- Checkpoints on storage that fails ------------------------------------------------------------


def _mount(*args):
  done = subprocess.run(["mount", *args], capture_output=True, text=True)
  if done.returncode != 0:
    pytest.skip(f"cannot mount here ({(done.stderr.strip() or 'mount failed')[:120]})")


def _umount(path):
  for _ in range(20):
    if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
      return
    time.sleep(0.1)
  subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _state(size=6):
  import jax.numpy as jnp
  import optax

  params = {"dense": {"kernel": jnp.arange(float(size)), "bias": jnp.ones(3)}}
  return params, optax.adam(1e-2).init(params)


@pytest.mark.skipif(shutil.which("mount") is None, reason="no mount command")
def test_a_read_only_checkpoints_directory_fails_the_next_save_at_once(tmp_path):
  from research.checkpoint import Checkpointer

  directory = tmp_path / "checkpoints"
  params, opt = _state()
  with Checkpointer(directory) as ckpt:
    ckpt.save(1, params, opt, {"step": 1}, None)
    ckpt.wait()
    _mount("--bind", str(directory), str(directory))
    try:
      _mount("-o", "remount,bind,ro", str(directory))
      t = time.monotonic()
      with pytest.raises(storage.StorageError) as raised:
        ckpt.save(2, params, opt, {"step": 2}, None)
      seconds = time.monotonic() - t
    finally:
      _umount(directory)
    ckpt.save(3, params, opt, {"step": 3}, None)  # writable again: saving goes on
  assert seconds < 10  # it had waited 300 s for a directory another thread failed to make
  assert str(raised.value).startswith(f"checkpoint step 2 not saved: {directory} is read-only")
  with Checkpointer(directory, read_only=True) as ckpt:
    assert ckpt.all_steps() == [1, 3]


@pytest.mark.skipif(shutil.which("mount") is None, reason="no mount command")
def test_a_full_disk_fails_a_checkpoint_in_one_line_without_orbax_tracebacks(tmp_path, caplog):
  from research.checkpoint import Checkpointer

  directory = tmp_path / "small"
  directory.mkdir()
  _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(directory))
  try:
    params, opt = _state(100_000)  # 400 KB of params alone
    with pytest.raises(storage.StorageError) as raised:
      with Checkpointer(directory / "checkpoints") as ckpt:
        ckpt.save(1, params, opt, {"step": 1}, None)
        ckpt.wait()
  finally:
    _umount(directory)
  assert str(raised.value).startswith(
    f"a checkpoint could not be saved: the file system of {directory / 'checkpoints'} is full"
  )
  assert not [r for r in caplog.records if r.levelname == "ERROR"]  # one per thread, before


# --- Setups that used to end in a traceback -------------------------------------------------------


@pytest.mark.parametrize(
  "override, says",
  [
    ("num_steps=3000000000", "num_steps must be below 2**31"),
    ("optimizer.warmup_steps=3000000000", "optimizer.warmup_steps must be below 2**31"),
    ("optimizer.b1=nan", "optimizer.b1 is a decay rate and must be a finite number in [0, 1)"),
    ("optimizer.b2=1.5", "optimizer.b2 is a decay rate"),
    ("optimizer.momentum=1.0", "optimizer.momentum is a decay rate"),
    ("optimizer.b1=-0.1", "optimizer.b1 is a decay rate"),
  ],
)
def test_step_counts_and_decay_rates_out_of_range_name_the_field(override, says):
  with pytest.raises(ConfigError) as raised:
    load_config(os.path.join(REPO, "experiments/mnist1d_cnn.py"), [override])
  assert says in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="this machine has an NVIDIA GPU")
def test_a_backend_that_is_not_here_is_one_line_naming_it():
  done = subprocess.run(
    [sys.executable, "-c", "import jax\nfrom research.cli import run_main\nrun_main(jax.devices)"],
    env={**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cuda"},
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert done.returncode == 1
  (line,) = done.stderr.splitlines()
  assert line.startswith("error: JAX_PLATFORMS=cuda asks for a backend this machine cannot start")
  assert "cuda (no NVIDIA GPU visible)" in line and "unset JAX_PLATFORMS" in line


class _Coordination:
  """The distributed runtime's key-value store, as two processes share it."""

  def __init__(self):
    self.store = {}

  def key_value_set(self, key, value):
    self.store[key] = value

  def blocking_key_value_get(self, key, timeout_ms):
    return self.store[key]


def test_distributed_processes_with_different_configs_name_the_fields(monkeypatch):
  import jax
  from jax._src import distributed as jax_distributed

  from research.training import distributed
  from research.training.parallel import ParallelError

  path = os.path.join(REPO, "experiments/mnist1d_cnn.py")
  coordination = _Coordination()
  monkeypatch.setattr(jax_distributed.global_state, "client", coordination)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)  # process 1, started with another rate
  with pytest.raises(KeyError):  # process 0 has not published yet (the fake does not wait)
    distributed.check_same_config(load_config(path, ["optimizer.learning_rate=3e-3"]), 5)
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  with pytest.raises(ParallelError) as raised:
    distributed.check_same_config(load_config(path), 5)
  assert str(raised.value) == (
    "--distributed: process 1 was started with another config (optimizer.learning_rate: 0.003 "
    "there, 0.01 here); start every process with the same --config and --config.* flags"
  )
  coordination.store["research/config/1"] = coordination.store["research/config/0"]
  distributed.check_same_config(load_config(path), 5)  # the same config: no error


@pytest.mark.slow
def test_two_distributed_processes_with_different_configs_say_so_in_one_line_each(tmp_path):
  from tools.reliability.two_process import _free_port, _launch, _setup

  setup = _setup(str(tmp_path), 20, peer_timeout=5)
  address = f"127.0.0.1:{_free_port()}"
  cores = sorted(os.sched_getaffinity(0))
  pair = [
    _launch(setup, str(tmp_path), "differ", address, i, cores[i % len(cores)], overrides=extra)
    for i, extra in enumerate([(), ("optimizer.learning_rate=0.5",)])
  ]
  for i, launch in enumerate(pair):
    assert launch.wait(240) == 1
    (line,) = launch.stderr_lines()
    assert line.startswith(f"error: --distributed: process {1 - i} was started with another config")
    assert "optimizer.learning_rate: " in line
  assert not os.path.exists(tmp_path / "differ")  # refused before anything was written


@pytest.mark.slow
def test_sigterm_during_loadgen_leaves_the_old_bench_output_whole(tiny_cnn_run, tmp_path):
  workdir, _ = tiny_cnn_run
  out = tmp_path / "bench"
  (out / "loadgen").mkdir(parents=True)
  (out / "bench.json").write_text("old")
  (out / "loadgen" / "old.txt").write_text("old")
  before = _tree(out)
  proc = subprocess.Popen(
    [sys.executable, "-u", "scripts/bench_inference.py", "--workdir", workdir, "--out", str(out)]
    + ["--engines", "jax", "--precisions", "float32", "--max-batch", "4", "--latency-calls", "50"]
    + ["--loadgen-ms", "300", "--server-runs", "2", "--threads", "0"],
    cwd=REPO,
    env={**os.environ, "PYTHONPATH": REPO},
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  for line in proc.stdout:  # the first LoadGen scenario has finished: the second is under way
    if "LoadGen" in line:
      break
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=60)
  assert proc.returncode == 143
  assert stderr.splitlines() == ["stopped by SIGTERM before the end; re-run the same command"]
  assert _tree(out) == before and os.listdir(tmp_path) == ["bench"]
