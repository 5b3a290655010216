"""MNIST-1D, logistic regression (410 params), Adam 1e-2, batch 100, 6000 steps. Paper: 32 ± 1 %."""

from research.config import base_config


def get_config(variant: str = ""):
  """Variant 'shuffled' trains on the spatially shuffled dataset (paper: 32 ± 1 %)."""
  c = base_config()
  c.experiment = "mnist1d_logistic"
  c.model = {"name": "logistic", "dtype": "float32"}
  if variant == "shuffled":
    c.experiment += "_shuffled"
    c.data.shuffle_seq = True
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; this config has: shuffled")
  return c
