"""A GPT-2-small-shaped Transformer (12 layers, d_model 768, n_ctx 1024, 85M non-embedding
parameters) on a larger Markov source, for GPUs: bf16 compute over float32 master parameters,
data parallel over every local device.

Expected MFU: not yet measured here (no GPU was available when this config was added); run
`scripts/train.py` then `scripts/lm_costs.py` on a GPU and commit the report under results/lm/.
On CPU, shrink it first (--config.model.n_layer=2 --config.model.d_model=128 ...).
"""

import ml_collections

from research.config import base_config, optimizer_config
from research.config_variants import make_tiny, variant_names


def get_config(variant: str = ""):
  """Variant 'tiny': the same recipe (warmup, cosine, clipping, masked decay; warmup cut to 10 of
  40 steps) on a float32 model and data small enough for a CPU."""
  names = variant_names(variant, ("tiny",))
  c = base_config()
  c.experiment = "lm_markov_gpu"
  c.data = ml_collections.ConfigDict(
    {
      "name": "markov",
      "vocab_size": 1024,
      "branching": 16,
      "seed": 0,
      "sample_seed": 1,
      "train_tokens": 50_000_000,
      "val_tokens": 1_048_576,
      "n_ctx": 1024,
      "shuffle": True,
      "path": "",
      "val_fraction": 0.1,
      "validation_size": 256,  # training windows held out to choose the best checkpoint
    }
  )
  c.model = ml_collections.ConfigDict(
    {
      "name": "transformer",
      "n_layer": 12,
      "d_model": 768,
      "n_head": 12,
      "d_ff": 3072,
      "n_ctx": 1024,
      "tied_embeddings": True,
      "dtype": "bfloat16",
    }
  )
  # The usual recipe for this shape: linear warmup over the first 4 % of steps, cosine decay to
  # 10 % of the peak, the global gradient norm clipped at 1, and decoupled weight decay on
  # matrices only (biases, LayerNorm scales and offsets stay undecayed).
  c.optimizer = optimizer_config(
    name="adamw",
    learning_rate=6e-4,
    b2=0.95,
    weight_decay=0.1,
    schedule="cosine",
    warmup_steps=200,
    end_factor=0.1,
    clip_norm=1.0,
    weight_decay_mask="matrices",
  )
  c.batch_size = 64
  c.num_steps = 5000
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 1000
  c.eval_batch_size = 64
  c.num_devices = 0
  if "tiny" in names:
    make_tiny(c)
    c.data.update({"vocab_size": 64, "n_ctx": 16, "validation_size": 32})
    c.data.update({"train_tokens": 40_000, "val_tokens": 4000})
    c.model.update({"n_ctx": 16, "n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64})
    c.model.dtype = "float32"
    c.optimizer.warmup_steps = 10
    c.batch_size = 8
    c.eval_batch_size = 32
  return c
