"""The main job: train a run (resume it, or reuse it once finished), then put its training and
its inference side by side.

Everything in the report comes from one process on one machine: the run's own training time,
inference timed here on every engine through the same harness as `scripts/bench_inference.py`
(each break-even uses the fastest engine for its scenario, and names it), FLOPs counted
analytically and by XLA, memory from the compiled executables, and this machine's peak FLOP/s
measured with a large matmul. A language model goes the same way (trained or reused under the
lock, the report written whole) but is measured in tokens: research/studies/train_vs_infer_lm.py.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Sequence

import ml_collections

from research import dashboard, workdir_lock
from research import workdir as workdir_lib
from research.bench.latency import saturation_batch_size
from research.cost import CostError, hardware
from research.data import load_dataset
from research.models import count_params
from research.outputs import check_output_dir, json_text, write_all
from research.provenance import provenance
from research.serving.engines import check_engines
from research.serving.restore import load_run
from research.serving.run_kind import run_kind
from research.studies import StudyError, train_vs_infer_lm
from research.studies.cost_counts import compiled_memory, count_flops
from research.studies.cost_report import markdown_report, report_figure_files
from research.studies.edge import edge_summary
from research.studies.engine_timing import fastest_engines, time_engines
from research.studies.report_fields import trial_metrics
from research.training import preemption
from research.training.loop import train_and_evaluate

# What the report writes into the workdir and --out: report.json, report.md and its figure.
REPORT_FILES = ("report.json", "report.md", "report.png", "report.svg", "report.pdf")


@dataclasses.dataclass
class CostSettings:
  max_batch: int = 4096
  latency_calls: int = 2000
  seconds_per_size: float = 0.2
  profiles: tuple[str, ...] = tuple(hardware.PROFILES)
  power_watts: float = 15.0  # this machine, per busy core: an assumption, override it
  price_per_hour: float = 0.05  # this machine: an assumption, override it
  peak_matmul_n: int = 1024
  engines: tuple[str, ...] | None = None  # None: every installed engine; the fastest is reported
  edge: bool = True  # the "on the edge" section: IREE modules and device projections (about 5 s)


def check_settings(settings: CostSettings) -> None:
  """Raises CostError (or InferenceError for an engine) naming the first setting that cannot be
  used: every count and size positive, power positive, price not negative, names known."""
  for name in ("max_batch", "latency_calls", "seconds_per_size", "power_watts", "peak_matmul_n"):
    if not getattr(settings, name) > 0:
      raise CostError(f"{name.replace('_', '-')} must be positive, got {getattr(settings, name)}")
  if not settings.price_per_hour >= 0:
    raise CostError(f"price-per-hour must be >= 0, got {settings.price_per_hour}")
  for name in settings.profiles:
    hardware.get_profile(name)
  if settings.engines is not None:
    check_engines(settings.engines)


def run_job(
  config: ml_collections.ConfigDict,
  workdir: str,
  settings: CostSettings,
  progress: bool = True,
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """Train (or resume, or reuse a finished run), restore params, time inference, count costs;
  returns the report."""
  for name in settings.profiles:
    hardware.get_profile(name)  # unknown names fail before any work
  summary = train_or_reuse(config, workdir, progress, log)
  preemption.stop_if_requested("after training had finished (the run is complete)")
  preemption.training_done()  # measuring from here: a signal ends it at once, in one line
  run = load_run(workdir, "latest")
  data = load_dataset(config.data)
  batch, steps = config.batch_size, summary["steps"]

  log("timing inference on every engine: batch 1, then a batch sweep")
  sizes = tuple(sorted({2**i for i in range(settings.max_batch.bit_length())} | {batch}))
  engines = time_engines(run, data, sizes, settings, log)
  rt, sweep = engines["jax"].pop("_realtime"), engines["jax"].pop("_sweep")
  for e in engines.values():  # the other engines' raw timings stay out of the report
    e.pop("_realtime", None)
    e.pop("_sweep", None)
  best = max(sweep, key=lambda r: r["examples_per_s"])  # the jax apply's (XLA's counts below)

  log("counting FLOPs and memory")
  flop_counts = count_flops(config, run, steps)
  compiled_bytes, memory = compiled_memory(config, run, best["batch_size"])
  flop_counts["compiled_bytes_accessed"] = compiled_bytes

  log(f"measuring this machine's peak FLOP/s ({settings.peak_matmul_n}^3 matmul)")
  peak = hardware.measure_peak_flops(settings.peak_matmul_n)

  edge = None
  if settings.edge:
    log("compiling the model for the edge (IREE: this host and a phone's Arm core)")
    edge = edge_summary(run, flop_counts["forward_per_example"], peak["peak_flops"], log)

  train_seconds = summary["train_seconds"]
  train_s_per_example = train_seconds / (steps * batch)
  infer = fastest_engines(engines, batch)
  fwd_ex, train_total_flops = flop_counts["forward_per_example"], flop_counts["training_run_total"]

  def utilization(flops: float, seconds: float) -> float:
    return flops / seconds / peak["peak_flops"]

  return {
    "experiment": config.experiment,
    "model": config.model.name,
    "params": count_params(run.params),
    "workdir": os.path.abspath(workdir),
    "step": run.step,
    "batch_size": batch,
    "steps": steps,
    "final_test_accuracy": summary["final_test_accuracy"],
    "flops": flop_counts,
    "time": {
      "train_seconds": train_seconds,
      "compile_seconds": summary["compile_seconds"],
      "train_seconds_per_example": train_s_per_example,
      "inference": infer,
      "train_over_realtime_per_example": train_s_per_example
      / infer["realtime"]["seconds_per_prediction"],
      "train_over_batch_per_example": train_s_per_example
      / infer["batch"]["seconds_per_prediction"],
      "train_over_same_batch_inference": train_s_per_example
      / infer["train_batch"]["seconds_per_prediction"],
      "realtime": {k: rt[k] for k in ("serving", "floor", "compute")},
      "sweep": sweep,
      "saturation_batch_size": saturation_batch_size(sweep),
      "engines": engines,
    },
    "utilization": {
      "peak": peak,
      "training": utilization(train_total_flops, train_seconds),
      "realtime": utilization(fwd_ex, infer["realtime"]["seconds_per_prediction"]),
      "batch": utilization(fwd_ex, infer["batch"]["seconds_per_prediction"]),
    },
    "memory": memory,
    "edge": edge,
    **machine_costs(settings, peak, train_seconds, train_total_flops, fwd_ex, infer),
  }


def run_lm_job(
  config: ml_collections.ConfigDict,
  workdir: str,
  settings: CostSettings,
  lm: train_vs_infer_lm.LMJobSettings,
  progress: bool = True,
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """A language model: train (or resume, or reuse a finished run), then its costs and serving
  within the bounds in tokens (research/studies/train_vs_infer_lm.py); returns the report."""
  train_or_reuse(config, workdir, progress, log)
  preemption.stop_if_requested("after training had finished (the run is complete)")
  preemption.training_done()  # measuring from here: a signal ends it at once, in one line
  return train_vs_infer_lm.run_lm_job(workdir, lm, settings.peak_matmul_n, log)


def train_or_reuse(
  config: ml_collections.ConfigDict,
  workdir: str,
  progress: bool = True,
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """The run's summary: a finished run in `workdir` is reused as it stands (said once, no
  training, no progress bar); otherwise it is trained, or resumed from its latest checkpoint.
  A config the workdir's run may not take is refused either way."""
  step = workdir_lib.latest_checkpoint_step(workdir) if os.path.isdir(workdir) else None
  if step is not None and step == config.num_steps:
    workdir_lib.check_config(workdir, config)
    summary_path = workdir_lib.path(workdir, workdir_lib.SUMMARY)
    summary = workdir_lib.read_summary(workdir) if os.path.exists(summary_path) else {}
    if summary.get("status") == "finished" and summary.get("steps") == step:
      log(
        f"{config.experiment} in {workdir} is finished (step {step} of {config.num_steps}): "
        f"reusing it, no training"
      )
      return summary
  if step is None:
    log(f"training {config.experiment} in {workdir}")
  else:
    log(f"resuming {config.experiment} in {workdir} from step {step} of {config.num_steps}")
  return train_and_evaluate(config, workdir, progress=progress)


def machine_costs(
  settings: CostSettings,
  peak: dict[str, Any],
  train_seconds: float,
  train_total_flops: float,
  fwd_ex: float,
  infer: dict[str, Any],
) -> dict[str, Any]:
  """Break-even predictions, this machine's energy and money at the assumed power and price, and
  each named accelerator profile's (times from FLOPs at its assumed MFU)."""
  here = hardware.this_machine_profile(
    peak["peak_flops"], settings.power_watts, settings.price_per_hour
  )
  break_even = {
    "flops": hardware.break_even(train_total_flops, fwd_ex),
    **{
      f"seconds_{mode}": hardware.break_even(train_seconds, v["seconds_per_prediction"])
      for mode, v in infer.items()
    },
  }
  profiles = {}
  for name in settings.profiles:
    p = hardware.get_profile(name)
    train_s = train_total_flops / (p.peak_flops * p.mfu_train)
    per_pred = {
      "realtime": fwd_ex / (p.peak_flops * p.mfu_realtime),
      "batch": fwd_ex / (p.peak_flops * p.mfu_batch),
    }
    profiles[name] = {
      **dataclasses.asdict(p),
      "train_seconds": train_s,
      "train": hardware.energy_and_money(train_s, p),
      "dollars_per_million_predictions": {
        m: 1e6 * hardware.energy_and_money(s, p)["dollars"] for m, s in per_pred.items()
      },
      "break_even_predictions": {m: hardware.break_even(train_s, s) for m, s in per_pred.items()},
    }
  here_costs = {
    "train": hardware.energy_and_money(train_seconds, here),
    "dollars_per_million_predictions": {
      m: 1e6 * hardware.energy_and_money(v["seconds_per_prediction"], here)["dollars"]
      for m, v in infer.items()
    },
    "joules_per_prediction": {
      m: v["seconds_per_prediction"] * here.power_watts for m, v in infer.items()
    },
  }
  return {
    "break_even_predictions": break_even,
    "this_machine": {**dataclasses.asdict(here), **here_costs},
    "profiles": profiles,
  }


def train_vs_infer(
  config: ml_collections.ConfigDict,
  workdir: str,
  settings: CostSettings,
  argv: Sequence[str],
  out: str | None = None,
  progress: bool = True,
  log: Callable[[str], None] = print,
  lm: train_vs_infer_lm.LMJobSettings | None = None,
) -> tuple[dict[str, Any], str]:
  """The main job, end to end: `run_job` (a language model: `run_lm_job`, with `lm`'s settings),
  then report.{json,md,png} into the workdir (and `out`), and the report (text, figure, headline
  figures as trial metrics) into the run's TensorBoard summary (research/dashboard.py).

  Returns the report and the path of the markdown written last.
  """
  check_settings(settings)  # before any work: a bad number or name costs no training
  if run_kind(config) == "language_model":
    if settings.engines is not None:
      raise StudyError(
        f"--engines picks a classifier's inference engines; {config.experiment} is a language "
        f"model, served on the decode engine: leave --engines out"
      )
    lm = lm or train_vs_infer_lm.LMJobSettings()
    train_vs_infer_lm.check_lm_settings(lm)
    train_vs_infer_lm.check_fits_context(config, lm)
  elif lm is not None:
    raise StudyError(
      f"--slots, --requests and --decode-batches are for a language model; "
      f"{config.experiment or 'this config'} is a classifier: leave them out"
    )
  if out:
    own = [workdir_lib.path(workdir, n) for n in REPORT_FILES]  # the report it gets anyway
    check_output_dir(out, "--out", names=REPORT_FILES, runs=[workdir], own=own)
  with workdir_lock.hold([workdir]):  # it trains the run and writes reports into it
    return _train_and_report(config, workdir, settings, argv, out, progress, log, lm)


def _train_and_report(
  config: ml_collections.ConfigDict,
  workdir: str,
  settings: CostSettings,
  argv: Sequence[str],
  out: str | None,
  progress: bool,
  log: Callable[[str], None],
  lm: train_vs_infer_lm.LMJobSettings | None = None,
) -> tuple[dict[str, Any], str]:
  t = time.perf_counter()
  if lm is None:
    report = run_job(config, workdir, settings, progress=progress, log=log)
  else:
    report = run_lm_job(config, workdir, settings, lm, progress=progress, log=log)
  meta = provenance(argv, wall_seconds=time.perf_counter() - t)
  report["provenance"] = meta
  if lm is None:
    text = markdown_report(report, meta["markdown"]) + "\n"
    figure_files, metrics = report_figure_files, trial_metrics
  else:
    text = train_vs_infer_lm.markdown(report, meta["markdown"]) + "\n"
    figure_files, metrics = train_vs_infer_lm.figure_files, train_vs_infer_lm.trial_metrics
  md_path = ""
  # A signal while the report is written waits for all of it: never half old, half new.
  with preemption.whole("after training and measuring, once the report was written"):
    for directory in dict.fromkeys([workdir, out or workdir]):  # the workdir always keeps a copy
      md_path = workdir_lib.path(directory, workdir_lib.REPORT_MARKDOWN)
      figure = figure_files(report, workdir_lib.path(directory, workdir_lib.REPORT_FIGURE))
      # All or none: a full disk part-way leaves the old report, not a new JSON beside an old one.
      write_all(
        {
          workdir_lib.path(directory, workdir_lib.REPORT): json_text(report),
          md_path: text,
          **figure,
        }
      )
    dashboard.publish_report(
      workdir,
      report["step"],
      "report",
      text,
      [workdir_lib.path(workdir, workdir_lib.REPORT_FIGURE)],
      metrics(report),
    )
  return report, md_path
