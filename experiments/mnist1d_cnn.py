"""MNIST-1D, the reference CNN (5,210 params), Adam 1e-2, batch 100, 6000 steps. Paper: 94 ± 2 %."""

from research.config import base_config


def get_config(variant: str = ""):
  """Variant 'shuffled' trains on the spatially shuffled dataset (paper: 56 ± 2 %)."""
  c = base_config()
  c.experiment = "mnist1d_cnn"
  c.model = {"name": "cnn1d", "channels": 25, "dtype": "float32"}
  if variant == "shuffled":
    c.experiment += "_shuffled"
    c.data.shuffle_seq = True
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; this config has: shuffled")
  return c
