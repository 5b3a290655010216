"""A run directory's own files, and the one check that keeps every command's output off them.

A run directory is one that holds config.json (a sweep's directory: sweep.json). What training,
its reports and its benchmark write there is read back later (a resume, infer.py, compare_runs,
the dashboard), so an output that replaced one of them would silently break or lose the run:
`export.py --out RUN/config` used to write RUN/config.json. `check_targets` refuses such an
output before any work, in any run directory (not only the command's own --workdir), and an
output that is one of the command's own inputs. The output checks every script makes
(research/outputs.py: `check_output_file`, `check_output_prefix`, `check_output_dir`) call it,
so every output flag follows the same rule.

Writing into a run where a command's docs say so stays allowed: a command names the run files
it makes itself (`own`: bench_inference.py's WORKDIR/bench, train_vs_infer.py's report.*), and
any other name in a run (export.py's RUN/model.onnx) is not a run's own file.

Nothing here imports JAX.
"""

from __future__ import annotations

import os
from typing import Iterable

from research import workdir as w
from research.outputs import OutputError

RUN_MARKERS = (w.CONFIG, "sweep.json")  # a directory holding one is a run's (or a sweep's)

# Each run file or directory by name (research/workdir.py's layout, the reports' and the sweep's
# files), with what it is (for the error line).
RUN_FILES = {
  w.CONFIG: "the run's config",
  w.NUMERICS: "the run's numeric environment (x64 mode, threads)",
  w.SUMMARY: "the run's final summary",
  w.CHECKPOINTS: "the run's checkpoints",
  w.CHECKPOINTS + "_damaged": "the run's damaged checkpoints, kept for inspection",
  w.TENSORBOARD_SUMMARY: "the run's TensorBoard summary",
  w.PROFILE: "the run's profiler traces",
  w.REPORT: "the run's cost report",
  w.REPORT_MARKDOWN: "the run's cost report",
  **{f"report.{ext}": "the run's cost report figure" for ext in ("png", "svg", "pdf")},
  w.BENCH: "the run's inference benchmark",
  "lm_costs": "the run's language-model cost report",
  "sweep.json": "the sweep's definition",
  "sweep.md": "the sweep's table",
  "sweep.csv": "the sweep's table",
  w.LOCK: "the run's writer lock",
}
RUN_FILE_PREFIXES = {
  "events.out.tfevents.": "the run's TensorBoard events",
  ".compilation_cache": "the sweep's compilation cache",
}


def run_file_kind(name: str) -> str | None:
  """What `name` is when it is one of a run directory's own files, else None."""
  if name in RUN_FILES:
    return RUN_FILES[name]
  return next((what for p, what in RUN_FILE_PREFIXES.items() if name.startswith(p)), None)


def check_targets(
  flag: str,
  given: str,
  targets: Iterable[str],
  inputs: Iterable[tuple[str, str]] = (),
  runs: Iterable[str] = (),
  own: Iterable[str] = (),
) -> None:
  """Raises OutputError (one line: the flag, the file, the fix) when a path the command will
  write lands on a run's own file, or is one of its inputs.

  `given`: the flag's value as typed (the message quotes it); `targets`: the files and the
  directories the command writes (OUT.md, OUT.json for a prefix); `inputs`: (flag, path) of what
  it reads; `runs`: directories it makes into runs (not yet holding config.json); `own`: the run
  files this command itself makes, which it may replace. Symlinks and `..` are resolved.
  """
  runs = {form for r in runs for form in _forms(r)}
  own = [form for o in own for form in _forms(o)]
  inputs = list(inputs)
  fix = f"choose another {flag}: a new name, or a path outside the run's own files"
  for target in targets:
    for form in _forms(target):
      if any(form == o or form.startswith(o.rstrip(os.sep) + os.sep) for o in own):
        continue
      hit = _run_file(form, runs)
      if hit:
        file, run, what = hit
        verb = "overwrite" if file == form else "write into"
        raise OutputError(f"{flag} {given} would {verb} {file} ({what} in {run}); {fix}")
    for input_flag, path in inputs:
      if path and _same(target, path):
        raise OutputError(
          f"{flag} {given} would overwrite {path}, the {input_flag} this command reads; "
          f"choose another {flag}"
        )


def _forms(path: str) -> list[str]:
  """The path as written (absolute, `..` folded) and as resolved through symlinks."""
  written = os.path.normpath(os.path.abspath(path))
  real = os.path.realpath(path)
  return [written] if real == written else [written, real]


def _run_file(path: str, runs: set[str]) -> tuple[str, str, str] | None:
  """(the run file, its run directory, what it is) when `path` is or lies under a run's own
  file, in the nearest run directory above it that holds one; else None."""
  head, name = os.path.split(path)
  while name:
    if head in runs or any(os.path.isfile(os.path.join(head, m)) for m in RUN_MARKERS):
      what = run_file_kind(name)
      if what:
        return os.path.join(head, name), head, what
    head, name = os.path.split(head)
  return None


def _same(a: str, b: str) -> bool:
  """Whether `a` and `b` name one file (hard links included), or would once `a` is written."""
  try:
    return os.path.samefile(a, b)
  except OSError:  # `a` does not exist yet (or `b` is gone): compare the resolved names
    return os.path.realpath(a) == os.path.realpath(b)
