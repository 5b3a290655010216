"""A tiny decoder-only Transformer on a random sparse Markov source whose entropy rate is known.

32 symbols, 4 successors each: the source's entropy rate is the best achievable loss, and each
run reports its test loss against it (`gap_to_floor`, nats/token). A window's first position
sees no context (its best loss is the marginal entropy), so n_ctx is 128 to keep that term near
0.02 nats/token. Trains on CPU in a couple of minutes; data parallel over every local device.
"""

import ml_collections

from research.config import base_config, optimizer_config
from research.config_variants import make_tiny, variant_names


def get_config(variant: str = ""):
  """Variant 'tiny': one layer of width 32 on 32-token windows of a 20k-token corpus, 40 steps at
  a higher rate (1e-2) so those steps still learn much of the chain."""
  names = variant_names(variant, ("tiny",))
  c = base_config()
  c.experiment = "lm_markov_tiny"
  c.data = ml_collections.ConfigDict(
    {
      "name": "markov",
      "vocab_size": 32,
      "branching": 4,
      "seed": 0,
      "sample_seed": 1,
      "train_tokens": 1_000_000,
      "val_tokens": 65_536,
      "n_ctx": 128,
      "shuffle": True,
      "path": "",
      "val_fraction": 0.1,
      "validation_size": 0,  # training windows held out to choose the best checkpoint
    }
  )  # name=text reads `path` instead (character-level)
  c.model = ml_collections.ConfigDict(
    {
      "name": "transformer",
      "n_layer": 2,
      "d_model": 64,
      "n_head": 4,
      "d_ff": 256,
      "n_ctx": 128,
      "tied_embeddings": True,
      "dtype": "float32",
    }
  )
  c.optimizer = optimizer_config(name="adam", learning_rate=3e-3, b2=0.99)
  c.batch_size = 32
  c.num_steps = 1000
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 500
  c.eval_batch_size = 128
  c.num_devices = 0
  if "tiny" in names:
    make_tiny(c)
    c.data.update({"n_ctx": 32, "train_tokens": 20_000, "val_tokens": 4096})
    c.model.update({"n_ctx": 32, "n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64})
    c.optimizer.learning_rate = 1e-2
    c.batch_size = 16
    c.eval_batch_size = 64
  return c
