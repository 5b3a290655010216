"""Table 1 of "Scaling Down Deep Learning with MNIST-1D" (Greydanus & Kobak, ICML 2024).

Four models on MNIST-1D and on its spatially shuffled variant, `seeds` runs each, with the public
reference protocol (Adam 1e-2, batch 100 in sequential slices, 6000 steps, final step reported).
Each model's own settings come from `experiments/mnist1d_<model>.py`.
"""
from research.config import base_config

# Test accuracy, %: mean and standard deviation over three runs, as printed in the paper.
PAPER = {
    "logistic": {"original": (32, 1), "shuffled": (32, 1)},
    "mlp": {"original": (68, 2), "shuffled": (68, 2)},
    "cnn": {"original": (94, 2), "shuffled": (56, 2)},
    "gru": {"original": (91, 2), "shuffled": (57, 2)},
}


def get_config(variant: str = ""):
  if variant:
    raise ValueError(f"unknown variant {variant!r}; this config has none")
  c = base_config()
  c.experiment = "mnist1d_table1"
  c.models = ("logistic", "mlp", "cnn", "gru")
  c.seeds = 3
  c.eval_every = 250  # best-step accuracy is tracked at this resolution
  c.paper = PAPER
  return c
