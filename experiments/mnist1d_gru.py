"""MNIST-1D, the reference bidirectional GRU (hidden 6, 5,134 params), Adam 1e-2, batch 100, 6000
steps. Paper: 91 ± 2 %."""

from research.config import base_config
from research.config_variants import make_tiny, variant_names


def get_config(variant: str = ""):
  """Variants: 'shuffled' trains on the spatially shuffled dataset (paper: 57 ± 2 %); 'tiny'
  cuts the run to a few dozen steps (research/config_variants.py). They combine: shuffled,tiny."""
  names = variant_names(variant, ("shuffled", "tiny"))
  c = base_config()
  c.experiment = "mnist1d_gru"
  c.model = {"name": "gru", "hidden": 6, "unroll": 1, "dtype": "float32"}
  if "shuffled" in names:
    c.experiment += "_shuffled"
    c.data.shuffle_seq = True
  if "tiny" in names:
    make_tiny(c)
  return c
