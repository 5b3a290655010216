"""MNIST-1D, the reference bidirectional GRU (hidden 6, 5,134 params), Adam 1e-2, batch 100, 6000
steps. Paper: 91 ± 2 %."""

from research.config import base_config


def get_config(variant: str = ""):
  """Variant 'shuffled' trains on the spatially shuffled dataset (paper: 57 ± 2 %)."""
  c = base_config()
  c.experiment = "mnist1d_gru"
  c.model = {"name": "gru", "hidden": 6, "unroll": 1, "dtype": "float32"}
  if variant == "shuffled":
    c.experiment += "_shuffled"
    c.data.shuffle_seq = True
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; this config has: shuffled")
  return c
