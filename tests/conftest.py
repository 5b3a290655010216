"""Tests see 8 CPU devices (set before any JAX work) and share one MNIST-1D generation: its
disk cache (research/data/mnist1d.py) points at a directory of the system's temp dir, shared by
the suite's runs, its workers and the scripts they launch, never the user's ~/.cache.

Under pytest-xdist (`-n 2`), each worker pins itself to its own core before JAX starts, so the
`--threads 1` runs the tests launch (which pin to one of the cores they may use) spread over the
cores instead of all landing on the first. The CPUs the machine offers are kept in
TEST_MACHINE_CPUS for the test that launches runs on different CPU sets.
"""

import os
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
