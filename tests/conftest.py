"""Tests see 8 CPU devices (set before any JAX work) and share one MNIST-1D generation."""

import functools
import os
import sys

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
