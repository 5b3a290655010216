"""Table 1 of "Scaling Down Deep Learning with MNIST-1D" (Greydanus & Kobak, ICML 2024).

Four models on MNIST-1D and on its spatially shuffled variant, `seeds` runs each, with the public
reference protocol (Adam 1e-2, batch 100 in sequential slices, 6000 steps, final step reported).
Each model's own settings come from `experiments/mnist1d_<model>.py`.
"""

from research.config import base_config
from research.config_variants import make_tiny, variant_names

# Test accuracy, %: mean and standard deviation over three runs, as printed in the paper.
PAPER = {
  "logistic": {"original": (32, 1), "shuffled": (32, 1)},
  "mlp": {"original": (68, 2), "shuffled": (68, 2)},
  "cnn": {"original": (94, 2), "shuffled": (56, 2)},
  "gru": {"original": (91, 2), "shuffled": (57, 2)},
}


def get_config(variant: str = ""):
  """Variant 'tiny': the two cheapest models, two seeds, 40 steps (a table in seconds)."""
  names = variant_names(variant, ("tiny",))
  c = base_config()
  c.experiment = "mnist1d_table1"
  c.models = ("logistic", "mlp", "cnn", "gru")
  c.seeds = 3
  c.eval_every = 250  # best-step accuracy is tracked at this resolution
  c.paper = PAPER
  # Set in the worker processes only. XLA:CPU's older fusion emitters compile every model about
  # 40% faster and train the GRU 1.2x faster (its step dominates the table); the MLP trains
  # about 1.25x slower. Measured on a 2-core AMD EPYC with jax 0.10.2.
  c.xla_flags = "--xla_cpu_use_fusion_emitters=false"
  if "tiny" in names:
    c.models = ("logistic", "mlp")
    c.seeds = 2
    make_tiny(c)
  return c
