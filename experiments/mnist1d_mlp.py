"""MNIST-1D, the reference residual MLP (15,210 params), Adam 1e-2, batch 100, 6000 steps.

Paper: 68 ± 2 %; the public reference code's protocol reaches about 64 %.
"""

from research.config import base_config
from research.config_variants import make_tiny, variant_names


def get_config(variant: str = ""):
  """Variants: 'shuffled' trains on the spatially shuffled dataset (paper: 68 ± 2 %); 'tiny'
  cuts the run to a few dozen steps (research/config_variants.py). They combine: shuffled,tiny."""
  names = variant_names(variant, ("shuffled", "tiny"))
  c = base_config()
  c.experiment = "mnist1d_mlp"
  c.model = {"name": "mlp", "hidden": 100, "dtype": "float32"}
  if "shuffled" in names:
    c.experiment += "_shuffled"
    c.data.shuffle_seq = True
  if "tiny" in names:
    make_tiny(c)
  return c
