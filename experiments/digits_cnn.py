"""scikit-learn's 8x8 digits (shipped with the package), a small 2-D CNN, Adam 1e-3."""

from research.config import base_config
from research.config_variants import make_tiny, variant_names


def get_config(variant: str = ""):
  """Variant 'tiny' cuts the run to a few dozen steps (research/config_variants.py)."""
  names = variant_names(variant, ("tiny",))
  c = base_config()
  c.experiment = "digits_cnn"
  c.data.name = "digits"
  c.data.shuffle = True  # 1437 examples: reshuffle each epoch
  c.model = {"name": "cnn2d", "channels": (16, 32), "dtype": "float32"}
  c.optimizer.learning_rate = 1e-3
  c.batch_size = 64
  c.num_steps = 2000
  c.log_every = 100
  c.eval_every = 200
  c.checkpoint_every = 1000
  c.eval_batch_size = 512
  if "tiny" in names:
    make_tiny(c)
  return c
