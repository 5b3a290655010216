"""Tests see 8 CPU devices (set before any JAX work) and share one MNIST-1D generation: its
disk cache (research/data/mnist1d.py) points at a directory of the system's temp dir, shared by
the suite's runs, its workers and the scripts they launch, never the user's ~/.cache.

Under pytest-xdist (`-n 2`), each worker pins itself to its own core before JAX starts, so the
`--threads 1` runs the tests launch (which pin to one of the cores they may use) spread over the
cores instead of all landing on the first. The CPUs the machine offers are kept in
TEST_MACHINE_CPUS for the test that launches runs on different CPU sets.
"""

import contextlib
import io
import os
import runpy
import sys
import tempfile

_MACHINE_CPUS = sorted(os.sched_getaffinity(0))
os.environ.setdefault("TEST_MACHINE_CPUS", ",".join(map(str, _MACHINE_CPUS)))
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... under pytest -n
if _WORKER.startswith("gw") and len(_MACHINE_CPUS) > 1:
  os.sched_setaffinity(0, {_MACHINE_CPUS[int(_WORKER[2:]) % len(_MACHINE_CPUS)]})

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import pytest  # noqa: E402

from research.data.mnist1d import CACHE_ENV  # noqa: E402

os.environ[CACHE_ENV] = os.path.join(tempfile.gettempdir(), "train-vs-infer-tests-cache")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo_root():
  return REPO


# ---- Scripts in this process ---------------------------------------------------------------------


@pytest.fixture
def script_here(monkeypatch):
  """Runs scripts/NAME in this process (its imports are warm), from the repository root, as
  `run_main` runs it: `script_here(NAME, *argv)` -> (exit status, stdout, stderr).

  For what needs no fresh process: a script's output, its files, the one `error:` line of a bad
  input. Scripts that take --threads need --threads 0 here (pinning refuses to run once JAX has
  started, as it has in this process). The same errors from fresh processes, where threads left
  at exit could add lines: tests/test_bad_inputs.py and scripts/fault_campaign.py.
  """
  return lambda name, *argv: _run_script(monkeypatch, name, *argv)


@pytest.fixture(scope="module")
def script_here_module():
  """`script_here` for a module-scoped fixture: one script run shared by a module's tests (each
  call's patches undone when it returns)."""

  def run(name, *argv):
    with pytest.MonkeyPatch.context() as monkeypatch:
      return _run_script(monkeypatch, name, *argv)

  return run


def _run_script(monkeypatch, name, *argv):
  from research.training import preemption

  monkeypatch.chdir(REPO)
  monkeypatch.setattr(sys, "argv", [name, *map(str, argv)])
  monkeypatch.setattr(
    preemption, "install", lambda *args, **kwargs: None
  )  # pytest keeps its signal handlers
  out, err, code = io.StringIO(), io.StringIO(), 0
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      runpy.run_path(os.path.join(REPO, "scripts", name), run_name="__main__")
    except SystemExit as exit_:
      code = exit_.code
  # Universal newlines, as a text-mode subprocess.run reads them (csv writes "\r\n").
  text = lambda f: f.getvalue().replace("\r\n", "\n")  # noqa: E731
  return code, text(out), text(err)


# ---- Shared trained runs -------------------------------------------------------------------------
# Each trains once per session (per worker under pytest-xdist) into its own directory. Tests read
# them; a test that changes a run (resumes it, writes reports into it) copies it first with
# shutil.copytree.


def _train_once(tmp_path_factory, config):
  """Trains `config` (a ConfigDict, or a path[:variant] to load) into a fresh directory."""
  from research.config import load_config
  from research.training.loop import train_and_evaluate

  if isinstance(config, str):
    config = load_config(config)
  workdir = str(tmp_path_factory.mktemp("shared_run") / "run")
  return workdir, train_and_evaluate(config, workdir, progress=False)


@pytest.fixture(scope="session")
def tiny_cnn_run(tmp_path_factory):
  """experiments/mnist1d_cnn.py:tiny, trained: (workdir, summary)."""
  return _train_once(tmp_path_factory, os.path.join(REPO, "experiments/mnist1d_cnn.py:tiny"))


@pytest.fixture(scope="session")
def tiny_mlp_run(tmp_path_factory):
  """experiments/mnist1d_mlp.py:tiny, trained: (workdir, summary)."""
  return _train_once(tmp_path_factory, os.path.join(REPO, "experiments/mnist1d_mlp.py:tiny"))


@pytest.fixture(scope="session")
def trained_cnn_run(tmp_path_factory):
  """The CNN trained 200 steps (73 % test accuracy: int8 has something to lose), its best step
  chosen on 500 validation examples: (workdir, summary, config)."""
  from research.config import load_config

  every = ["log_every=50", "eval_every=100", "checkpoint_every=100"]
  config = load_config(
    os.path.join(REPO, "experiments/mnist1d_cnn.py"),
    ["num_steps=200", *every, "data.validation_size=500"],
  )
  workdir, summary = _train_once(tmp_path_factory, config)
  return workdir, summary, config
