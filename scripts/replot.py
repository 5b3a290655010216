"""Re-draw figures from saved results, measuring nothing again.

  python scripts/replot.py results/cost/mnist1d_cnn/report.json       # report.{png,svg,pdf}
  python scripts/replot.py results/inference/mnist1d_cnn/bench.json   # latency.*, batch_sweep.*
  python scripts/replot.py results/cost/*/report.json results/inference/*/bench.json
  python scripts/replot.py runs/cnn/report.json --out /tmp/figures

A cost report (report.json, from scripts/train_vs_infer.py) gives report.{png,svg,pdf}; an
inference benchmark (bench.json, from scripts/bench_inference.py) gives batch_sweep.* and, from
the per-call samples saved beside it (latency_samples.json), latency.*. Figures are written
beside each input, or into --out; --markdown re-renders report.md / bench.md from the JSON too.
Every input is read and checked before anything is drawn.

The file names are fixed, so one directory takes one cost report and one benchmark: two cost
reports (or two benchmarks) that would write into the same directory, such as
`results/cost/*/report.json --out DIR`, are refused before anything is drawn, instead of each
overwriting the last. Leave out --out to draw each beside its JSON, or give each its own --out.
An --out in another run directory whose own report or benchmark figures it would replace is
refused too (research/run_files.py).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def main() -> int:
  from research.cli import ArgumentParser

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("files", nargs="+", help="report.json or bench.json files")
  p.add_argument(
    "--out",
    default=None,
    help="directory for the figures (default: beside each); it takes one cost report and one "
    "benchmark, since their file names are fixed",
  )
  p.add_argument(
    "--markdown",
    action="store_true",
    help="also re-render report.md / bench.md from the saved JSON (same numbers, current layout)",
  )
  args = p.parse_args()
  jobs = [_load(path) for path in args.files]  # every input checked before anything is drawn
  from research.outputs import check_output_dir

  _refuse_shared_names(jobs, args.out)
  # Re-drawing a JSON's own figures beside it is what replot is for, in a run too (RUN/bench);
  # any other file of a run, or one of these in another run's directory, is refused.
  names = {path: _written(samples is None, args.markdown) for path, _, samples in jobs}
  own = [os.path.join(os.path.dirname(p), n) for p, ns in names.items() for n in ns]
  for out in {args.out} if args.out else {os.path.dirname(path) or "." for path, _, _ in jobs}:
    check_output_dir(
      out,
      "--out" if args.out else "directory",
      "pass --out DIR to write the figures elsewhere",
      names=sorted({n for p, ns in names.items() if args.out or _beside(p, out) for n in ns}),
      inputs=[("input", path) for path, _, _ in jobs],
      own=own,
    )

  from research import workdir as workdir_lib
  from research.bench import figures
  from research.studies import StudyError
  from research.studies.cost_report import plot_report

  for path, data, samples in jobs:
    out = args.out or os.path.dirname(path) or "."
    try:
      if samples is None:
        png = plot_report(data, os.path.join(out, workdir_lib.REPORT_FIGURE))
        written = figures.figure_paths(png)
      else:
        experiment = data.get("provenance", {}).get("experiment") or os.path.basename(out)
        written = figures.write_benchmark_figures(data, samples, out, experiment)
    except (KeyError, TypeError, IndexError) as e:
      raise StudyError(f"{path}: a field the figure needs is missing or malformed ({e!r})") from e
    if args.markdown:
      written.append(_rewrite_markdown(path, data, samples is None, out))
    print(f"{path} -> {', '.join(written)}")
  return 0


def _written(is_report: bool, markdown: bool) -> list[str]:
  """The files replot writes for one input: its figures (and, with --markdown, its markdown)."""
  from research.bench.figures import FORMATS, LATENCY_SAMPLES

  if is_report:
    return [f"report.{ext}" for ext in FORMATS] + (["report.md"] if markdown else [])
  figures = [f"{f}.{ext}" for f in ("latency", "batch_sweep") for ext in FORMATS]
  return [LATENCY_SAMPLES, *figures] + (["bench.md"] if markdown else [])


def _beside(path: str, out: str) -> bool:
  return os.path.realpath(os.path.dirname(path) or ".") == os.path.realpath(out)


def _refuse_shared_names(jobs: list[tuple[str, dict[str, Any], Any]], out: str | None) -> None:
  """Two inputs of one kind into one directory would write the same file names: the last would
  silently replace the others, so this is refused (one `error:` line) before anything is drawn."""
  from research.outputs import OutputError

  seen: dict[tuple[str, bool], str] = {}
  for path, _, samples in jobs:
    directory = out or os.path.dirname(path) or "."
    key = (os.path.realpath(directory), samples is None)
    first = seen.setdefault(key, path)
    if os.path.realpath(first) == os.path.realpath(path):
      continue  # the same input twice draws the same files twice
    names = "report.{png,svg,pdf}" if samples is None else "latency.*, batch_sweep.*"
    clash = f"{first} and {path} would both write {names} into {directory}"
    fix = (
      "leave out --out to draw each beside its own JSON, or replot them one at a time"
      if out
      else "replot them one at a time, each with its own --out DIR"
    )
    raise OutputError(f"{clash}, and only the last would survive; {fix}")


def _load(path: str) -> tuple[str, dict[str, Any], Any]:
  """(path, data, samples): samples None for a cost report, the batch-1 samples for a benchmark."""
  from research.bench.figures import LATENCY_SAMPLES, read_latency_samples
  from research.studies import StudyError

  data = _read_json(path)
  if isinstance(data, dict) and "break_even_predictions" in data:
    _require(path, data, ("flops", "time", "utilization", "experiment", "model", "params"))
    return path, data, None
  if isinstance(data, dict) and isinstance(data.get("records"), list):
    samples_path = os.path.join(os.path.dirname(path), LATENCY_SAMPLES)
    if not os.path.exists(samples_path):
      raise StudyError(
        f"{samples_path} not found: the latency figure needs the per-call samples that "
        "scripts/bench_inference.py saves beside bench.json; re-run the benchmark to make them"
      )
    samples = _read_json(samples_path)
    if not data["records"] or not isinstance(samples, dict) or not samples:
      raise StudyError(
        f"{path} holds no measurements or {samples_path} no samples; re-run "
        "scripts/bench_inference.py to make them"
      )
    try:
      return path, data, read_latency_samples(samples_path)
    except (AttributeError, TypeError, ValueError) as e:
      raise StudyError(f"{samples_path} is malformed ({e}); re-run the benchmark") from None
  raise StudyError(
    f"{path} is neither a cost report (report.json from scripts/train_vs_infer.py) nor an "
    "inference benchmark (bench.json from scripts/bench_inference.py)"
  )


def _read_json(path: str) -> Any:
  from research.studies import StudyError

  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise StudyError(f"{path} not found") from None
  except (OSError, ValueError) as e:
    raise StudyError(f"{path} cannot be read as JSON: {e}") from None


def _rewrite_markdown(path: str, data: dict[str, Any], is_report: bool, out: str) -> str:
  """The markdown is a rendering of the JSON: re-rendering changes the layout, not a number."""
  from research.outputs import write_text

  meta = data.get("provenance", {})
  if is_report:
    from research.studies.cost_report import markdown_report

    text, name = markdown_report(data, meta.get("markdown", "")), "report.md"
  else:
    from research.bench.inference_report import markdown_report

    title = f"Inference benchmark: {meta.get('experiment')} (step {meta.get('step')})"
    result = {k: v for k, v in data.items() if k != "provenance"}
    text, name = markdown_report(result, title, meta.get("markdown", "")), "bench.md"
  target = os.path.join(out, name)
  write_text(target, text + "\n")
  return target


def _require(path: str, data: dict[str, Any], keys: tuple[str, ...]) -> None:
  from research.studies import StudyError

  missing = [k for k in keys if k not in data]
  if missing:
    raise StudyError(f"{path} is a cost report without {', '.join(missing)}")


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
