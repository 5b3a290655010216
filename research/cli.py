"""Shared pieces of the entry points: `--config.key=value` overrides and one-line errors.

Scripts parse flags here and hand one library call to `run_main`, which turns any `UserError`
into one `error:` line and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, NoReturn, Sequence

from research.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
  """argparse under the project's error contract: a bad flag is one `error:` line and exit 1,
  like every other bad input (argparse's own prints its usage and exits 2)."""

  def error(self, message: str) -> NoReturn:
    print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
    sys.exit(1)


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """Gives a plain argparse parser `ArgumentParser`'s one-line errors; returns it."""
  if not isinstance(parser, ArgumentParser):
    parser.error = ArgumentParser.error.__get__(parser)  # type: ignore[method-assign]
  return parser


def _number(kind: type, minimum: float, strict: bool) -> Callable[[str], int | float]:
  what = {int: "integer", float: "number"}[kind]
  bound = f"{'>' if strict else '>='} {minimum:g}"

  def parse(raw: str) -> int | float:
    try:
      value = kind(raw)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expects an {what} {bound}, got {raw!r}") from None
    if (
      value != value
      or value in (float("inf"), float("-inf"))
      or not (value > minimum if strict else value >= minimum)
    ):
      raise argparse.ArgumentTypeError(f"must be {bound}, got {raw!r}")
    return value

  parse.__name__ = f"{what} {bound}"  # argparse names the type in its messages
  return parse


# argparse `type=`s for counts, sizes and durations: a zero or negative value is an error that
# names the flag, not a run that silently does nothing.
positive_int = _number(int, 0, strict=True)
non_negative_int = _number(int, 0, strict=False)
positive_float = _number(float, 0, strict=True)
non_negative_float = _number(float, 0, strict=False)


def checkpoint_arg(raw: str) -> str | int:
  """`--checkpoint`: latest, best or a step number (an argparse `type=`)."""
  if raw in ("latest", "best"):
    return raw
  if raw.isdigit():
    return int(raw)
  raise argparse.ArgumentTypeError(f"{raw!r} is not latest, best or a step number (e.g. 6000)")


def comma_list(raw: str) -> tuple[str, ...]:
  """A comma-separated list with at least one non-empty item (an argparse `type=`)."""
  items = tuple(s.strip() for s in raw.split(","))
  if not all(items):
    raise argparse.ArgumentTypeError(f"expects a comma-separated list of names, got {raw!r}")
  return items


def parse_with_overrides(
  parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> tuple[argparse.Namespace, list[str]]:
  """Parses known flags; each `--config.a.b=v` (or `--config.a.b v`) becomes an override 'a.b=v'.

  Errors are one `error:` line and exit 1, whatever parser the script built. (Why this and not
  ml_collections' config_flags: `research.config.apply_overrides`.)"""
  one_line_errors(parser)
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


def run_main(main: Callable[[], int | None], preemptible: bool = False) -> None:
  """Runs `main`, turning a `UserError` (research/errors.py) into one line on stderr and exit 1.

  A storage failure (a full disk, a read-only directory, a file where a directory should be:
  research/storage.py) and a JAX backend that JAX_PLATFORMS names but this machine lacks are
  one `error:` line too, wherever they were raised. SIGTERM, SIGHUP and Ctrl-C are taken over
  before JAX starts (research/training/preemption.py). `preemptible` (training): the run
  checkpoints the step it reaches and exits 143, 129 or 130. Otherwise the signal raises where
  the command is, so its cleanup runs (no temporary file, no half-replaced directory stays), and
  it exits 143, 129 or 130 with one line. Every failing exit leaves through `os._exit` once its
  line is out (`sys.exit` inside a test process): background threads (Orbax's event loop) then
  cannot print tracebacks at interpreter shutdown, which under load had turned a one-line error
  into 62-125 lines.
  """
  from research import storage
  from research.runtime import backend_problem
  from research.training import preemption

  preemption.install(unwind=not preemptible)
  try:
    code = main() or 0
  except UserError as e:
    _exit(f"error: {e}", 1)
  except KeyboardInterrupt:
    if preemptible:
      _exit("interrupted; re-run the same command to resume from the last checkpoint", 130)
    _exit("interrupted by SIGINT (Ctrl-C) before the end; re-run the same command", 130)
  except preemption.Stopped as e:
    _exit(str(e), e.exit_code)
  except Exception as e:
    if isinstance(e, preemption.Interrupted):
      _exit(str(e), e.exit_code)
    line = storage.describe(e) or backend_problem(e)
    if line is None:
      raise
    _exit(f"error: {line}", 1)
  signum = preemption.stopping()
  if signum is not None:  # raised, but caught on the way by code that went on
    _exit(str(preemption.Stopped(signum)), 128 + signum)
  sys.exit(code)


def _exit(line: str, code: int) -> None:
  print(line, file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  if "pytest" in sys.modules:  # a script run inside a test process: end the script, not pytest
    sys.exit(code)
  os._exit(code)
