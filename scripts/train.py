"""Train one experiment: checkpoints, TensorBoard events and summary.json land in --workdir.

  python scripts/train.py --config experiments/mnist1d_cnn.py --workdir runs/cnn
  python scripts/train.py --config experiments/mnist1d_cnn.py:shuffled --config.num_steps=2000

Any config field can be overridden with --config.<field>=<value>. Re-running the same command on
an existing workdir resumes from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import os


def main() -> int:
  from research.cli import add_experiment_flags, add_threads_flag, parse_with_overrides, workdir_for
  from research.config import load_config
  from research.runtime import configure_threads

  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  add_experiment_flags(parser)
  add_threads_flag(parser)
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  parser.add_argument(
    "--distributed",
    action="store_true",
    help="one of several processes (hosts): JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
    "JAX_PROCESS_ID, or a SLURM job step, say which; pass --config.num_devices=0 to use them all",
  )
  args, overrides = parse_with_overrides(parser)
  config = load_config(args.config, overrides)
  together = contextlib.nullcontext()
  if not args.distributed:
    configure_threads(args.threads)
  else:  # before any other JAX work
    from research.training import distributed

    # pinned by process index: the processes of one job on one machine take different cores
    configure_threads(args.threads, process_index=distributed.from_environment().index)
    distributed.initialize(config.peer_timeout_seconds)
    together = distributed.exit_on_error(config.peer_timeout_seconds)

  from research.training.loop import train_and_evaluate

  workdir = workdir_for(args, config)
  with together:  # several processes: an error ends them all, each with one line
    if args.distributed:
      distributed.check_same_config(config, config.peer_timeout_seconds)
    s = train_and_evaluate(config, workdir, progress=not args.no_progress)
  lines = [
    f"{s['experiment']}: {s['model']} ({s['params']:,} params), {s['steps']} steps on "
    f"{s['device']}",
    f"  test accuracy {s['final_test_accuracy']:.4f}, test loss {s['final_test_loss']:.4f} "
    f"(final, step {s['steps']})",
  ]
  if s["best_step"] is not None:
    lines.append(
      f"  best on validation: step {s['best_step']}, val accuracy {s['best_val_accuracy']:.4f}, "
      f"test accuracy {s['best_test_accuracy']:.4f} (--checkpoint best)"
    )
  if "bits_per_token" in s:  # a language model
    lm = f"  test loss {s['bits_per_token']:.4f} bits/token, perplexity {s['perplexity']:.3f}"
    if "loss_floor" in s:
      lm += (
        f"; {s['gap_to_floor']:+.4f} nats/token from the source's entropy rate "
        f"{s['loss_floor']:.4f}"
      )
    lines.append(lm)
  lines += [
    f"  train {s['train_seconds']:.2f} s ({s['steps_per_second']:.0f} steps/s), "
    f"compile {s['compile_seconds']:.2f} s",
    f"  workdir {os.path.abspath(workdir)} "
    f"(tensorboard --logdir {os.path.dirname(os.path.abspath(workdir))})",
  ]
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main, preemptible=True)
