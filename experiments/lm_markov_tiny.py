"""A tiny decoder-only Transformer on a random sparse Markov source whose entropy rate is known.

32 symbols, 4 successors each: the source's entropy rate is the best achievable loss, and each
run reports its test loss against it (`gap_to_floor`, nats/token). A window's first position
sees no context (its best loss is the marginal entropy), so n_ctx is 128 to keep that term near
0.02 nats/token. Trains on CPU in a couple of minutes; data parallel over every local device.
"""

import ml_collections

from research.config import base_config, optimizer_config


def get_config(variant: str = ""):
  if variant:
    raise ValueError(f"unknown variant {variant!r}; this config has none")
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
  return c
