"""scikit-learn's 8x8 handwritten digits, shipped inside the package (no download)."""

from __future__ import annotations

import numpy as np

from research.data.dataset import Dataset, make_dataset


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """1797 images scaled to [0, 1], split once by a seeded permutation."""
  from sklearn.datasets import load_digits as sk_load

  bunch = sk_load()
  x = bunch.images.astype(np.float32) / 16.0
  y = bunch.target
  order = np.random.default_rng(seed).permutation(len(y))
  n_test = int(round(len(y) * test_fraction))
  test, train = order[:n_test], order[n_test:]
  return make_dataset("digits", x[train], y[train], x[test], y[test], num_classes=10)
