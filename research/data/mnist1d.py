"""MNIST-1D, generated procedurally by the `mnist1d` package (no download)."""

from __future__ import annotations

import numpy as np

from research.data.dataset import Dataset, make_dataset


def load_mnist1d(seed: int = 42, shuffle_seq: bool = False) -> Dataset:
  """4000 train / 1000 test sequences of length 40, the package's default arguments.

  `seed` is the generator's (42 is the paper's dataset). `shuffle_seq` applies one fixed
  permutation of the 40 positions to every sequence, the paper's spatially shuffled variant.
  """
  from mnist1d.data import get_dataset_args
  from mnist1d.data import make_dataset as generate

  args = get_dataset_args()
  args.seed = seed
  args.shuffle_seq = shuffle_seq
  state = np.random.get_state()  # the generator reseeds numpy's global RNG; leave it as found
  try:
    raw = generate(args)
  finally:
    np.random.set_state(state)
  name = "mnist1d_shuffled" if shuffle_seq else "mnist1d"
  return make_dataset(name, raw["x"], raw["y"], raw["x_test"], raw["y_test"], num_classes=10)
