"""Tests see 8 CPU devices (set before any JAX work) and share one MNIST-1D generation.

Under pytest-xdist (`-n 2`), each worker pins itself to its own core before JAX starts, so the
`--threads 1` runs the tests launch (which pin to one of the cores they may use) spread over the
cores instead of all landing on the first. The CPUs the machine offers are kept in
TEST_MACHINE_CPUS for the test that launches runs on different CPU sets.
"""

import functools
import os
import sys

_MACHINE_CPUS = sorted(os.sched_getaffinity(0))
os.environ.setdefault("TEST_MACHINE_CPUS", ",".join(map(str, _MACHINE_CPUS)))
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... under pytest -n
if _WORKER.startswith("gw") and len(_MACHINE_CPUS) > 1:
  os.sched_setaffinity(0, {_MACHINE_CPUS[int(_WORKER[2:]) % len(_MACHINE_CPUS)]})

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import pytest  # noqa: E402

import research.data.mnist1d as _mnist1d  # noqa: E402

# Generation is deterministic; caching it keeps the suite fast without changing any result.
_mnist1d.load_mnist1d = functools.lru_cache(maxsize=4)(_mnist1d.load_mnist1d)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo_root():
  return REPO
