"""MNIST-1D, the reference residual MLP (15,210 params), Adam 1e-2, batch 100, 6000 steps.

Paper: 68 ± 2 %; the public reference code's protocol reaches about 64 %.
"""

from research.config import base_config


def get_config(variant: str = ""):
  """Variant 'shuffled' trains on the spatially shuffled dataset (paper: 68 ± 2 %)."""
  c = base_config()
  c.experiment = "mnist1d_mlp"
  c.model = {"name": "mlp", "hidden": 100, "dtype": "float32"}
  if variant == "shuffled":
    c.experiment += "_shuffled"
    c.data.shuffle_seq = True
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; this config has: shuffled")
  return c
