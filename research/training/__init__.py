"""Training: the pure step and its scanned chunks (step.py), losses, optimizers, evaluators chosen
by task, the loop `train_and_evaluate(config, workdir)` (loop.py), the data mesh (parallel.py),
and seeds side by side under vmap (multi_seed.py)."""
