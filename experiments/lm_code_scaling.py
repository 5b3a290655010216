"""The scaling study's runs: byte-level Transformers on SymPy 1.14.0's source (26.2 MB of code).

`scripts/scaling.py` sets each run's size (model.*) and token budget (num_steps, with the cosine
schedule decaying to it) on top of this; `study.size` and `study.tokens` label the run in
TensorBoard's HParams. Alone, this trains the grid's middle size on 2M tokens.
"""

import ml_collections

from research.config import base_config, optimizer_config
from research.config_variants import make_tiny, variant_names


def get_config(variant: str = ""):
  """Variant 'tiny': a one-layer width-16 model on 32-byte windows, 40 steps."""
  names = variant_names(variant, ("tiny",))
  c = base_config()
  c.experiment = "lm_code_scaling"
  c.data = ml_collections.ConfigDict(
    {
      "name": "source_code",
      "n_ctx": 128,
      "val_tokens": 65_537,  # 512 windows of 128: each evaluation's cost stays small
      "shuffle": True,
      "seed": 0,
      "path": "",
      "validation_size": 0,
    }
  )
  c.model = ml_collections.ConfigDict(
    {
      "name": "transformer",
      "n_layer": 2,
      "d_model": 32,
      "n_head": 2,
      "d_ff": 128,
      "n_ctx": 128,
      "tied_embeddings": True,
      "dtype": "float32",
    }
  )
  # Cosine to 10 % of the peak at the run's own budget, after a short warmup (as the papers).
  c.optimizer = optimizer_config(
    name="adamw",
    learning_rate=3e-3,
    b2=0.99,
    weight_decay=0.0,
    schedule="cosine",
    warmup_steps=50,
    end_factor=0.1,
    clip_norm=1.0,
  )
  c.study = ml_collections.ConfigDict({"size": "", "tokens": 0, "non_embedding_params": 0})
  c.batch_size = 16
  c.num_steps = 1000
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 500
  c.eval_batch_size = 256
  c.num_devices = 1
  if "tiny" in names:
    make_tiny(c)
    c.data.update({"n_ctx": 32, "val_tokens": 4097})
    c.model.update({"n_ctx": 32, "n_layer": 1, "d_model": 16, "n_head": 2, "d_ff": 64})
    c.optimizer.warmup_steps = 4
  return c
