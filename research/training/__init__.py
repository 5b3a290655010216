"""Training: from a config to a trained, checkpointed, summarized run.

- step.py: the pure train step, and a chunk of steps under `lax.scan`.
- losses.py: the cross-entropy sum both the step and evaluation use.
- optimizers.py: the optimizers a config names (Optax, scalars injected into the state).
- evaluators.py: evaluation chosen by task (classifier or language model).
- loop.py: `train_and_evaluate(config, workdir)` and `train_runs`, several runs side by side.
- run_dirs.py: a training's run directories locked and checked, prepared, and a failed start undone.
- side_by_side.py: M members under one vmapped chunk, the mechanism loop and multi_seed share.
- multi_seed.py: Table 1's members side by side, one dataset each, no run directories.
- parallel.py: the data mesh and the shardings the train chunk declares.
- distributed.py: several processes (hosts) training one run, ending together.
- distributed_log.py: one line instead of the runtime's abort when a peer of such a run dies.
- resume.py: what a checkpoint carries besides the state, and restoring from it.
- preemption.py: SIGTERM, Ctrl-C and SIGHUP stop a run after a checkpoint.
- profiling.py: a `jax.profiler` trace of a window of steps.
- progress.py: the progress bar and the line a resume prints.
- run_summary.py: summary.json, what a run ends with.
- sweep.py, sweep_table.py: a grid of runs and its table.
- workers.py: jobs on pinned worker processes, one per core (sweeps, Table 1), which the
  parent owns: signals forwarded, none outliving it; worker_process.py: a worker's side.
"""
