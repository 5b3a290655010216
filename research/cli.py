"""Shared pieces of the entry points: `--config.key=value` overrides and one-line errors.

Scripts parse flags here and hand one library call to `run_main`, which turns the library's
known errors into one `error:` line and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence


def parse_with_overrides(
  parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> tuple[argparse.Namespace, list[str]]:
  """Parses known flags; each `--config.a.b=v` (or `--config.a.b v`) becomes an override 'a.b=v'."""
  args, extra = parser.parse_known_args(argv)
  overrides, i = [], 0
  while i < len(extra):
    item = extra[i]
    if item.startswith("--config."):
      body = item[len("--config.") :]
      if "=" not in body:
        if i + 1 >= len(extra):
          parser.error(f"{item} needs a value (--config.key=value)")
        body, i = f"{body}={extra[i + 1]}", i + 1
      overrides.append(body)
    else:
      parser.error(f"unrecognized argument {item!r}")
    i += 1
  return args, overrides


def add_experiment_flags(parser: argparse.ArgumentParser) -> None:
  """`--config FILE[:VARIANT]` (default the MNIST-1D CNN) and `--workdir DIR` (default
  runs/<experiment>, resolved by `workdir_for`)."""
  parser.add_argument(
    "--config",
    default="experiments/mnist1d_cnn.py",
    help="experiment file, optionally with :variant (default: the MNIST-1D CNN)",
  )
  parser.add_argument("--workdir", default=None, help="run directory (default: runs/<experiment>)")


def workdir_for(args: argparse.Namespace, config) -> str:
  """--workdir, or runs/<experiment> when none was given."""
  return args.workdir or os.path.join("runs", config.experiment or "run")


def add_threads_flag(parser: argparse.ArgumentParser, default: int = 1) -> None:
  """`--threads 1` (default) pins the process to one core and XLA:CPU to one thread; 0 keeps XLA's
  thread pool. Faster for these small models on a 2-core CPU (batch-1 latency halves) and makes
  numbers independent of how the process was launched; no effect on GPU. Apply it with
  `research.runtime.configure_threads(args.threads)` before JAX starts."""
  parser.add_argument(
    "--threads",
    type=int,
    default=default,
    choices=(0, 1),
    help="1 pins the process to one core and XLA:CPU to one thread (faster for these small "
    "models on CPU, and launch-independent numbers); 0 keeps XLA's thread pool. No effect on GPU."
    f" Default {default}.",
  )


def run_main(main: Callable[[], int | None]) -> None:
  """Runs `main`, turning the project's known errors into one line on stderr and exit 1."""
  errors = _project_errors()
  try:
    sys.exit(main() or 0)
  except errors as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    print(
      "interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr
    )
    sys.exit(130)


def _project_errors() -> tuple[type[BaseException], ...]:
  """Every error class the library raises for bad input; each message names the fix."""
  from research.checkpoint import CheckpointError
  from research.config import ConfigError
  from research.cost import CostError
  from research.data import DataError
  from research.kernels import KernelError
  from research.models import ModelError
  from research.serving import InferenceError
  from research.serving.generate import GenerationError
  from research.studies import StudyError
  from research.training.loop import TrainingError
  from research.training.parallel import ParallelError
  from research.workdir import WorkdirError

  return (
    CheckpointError,
    ConfigError,
    CostError,
    DataError,
    KernelError,
    ModelError,
    InferenceError,
    StudyError,
    GenerationError,
    TrainingError,
    ParallelError,
    WorkdirError,
  )
