"""What a run shows in TensorBoard beside its training curves: its trial, its config and reports.

A run directory, as TensorBoard lists it (`tensorboard --logdir runs/`):

  WORKDIR/                  run `<name>`: time series only, the values that change over steps
                            (test/*, train/*, train_speed/*, val/*)
  WORKDIR/summary/          run `<name>/summary`: the HParams trial (the resolved config as
                            hparams, headline figures as `trial/*` metrics), the config and the
                            reports in the Text tab, the report figures in the Images tab
  WORKDIR/plugins/profile/  `jax.profiler` traces for the Profile tab

Single values (a break-even, a latency) are not time series: as scalars in the run itself they
were one dot per card on the landing page, above the training curves. Here they are the trial's
metrics, so the HParams table, parallel coordinates and scatter plots compare them across runs;
Time Series sorts card groups by name (plain string order): test, train, train_speed, trial,
val. The first screen shows the test and training curves.

Each command owns one part of `summary/` (training, report, bench) and rewrites it whole
(`tensorboard_writer.replace_part`), so re-running a command replaces its figures instead of
adding a second point, and the config text is current after a resume or an extension.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import ml_collections

from research import config as config_lib
from research.tensorboard_writer import SummaryWriter, replace_part

SUMMARY_RUN = "summary"

# summary.json field -> trial metric. HParams ticks the first five metrics (sorted by tag); with
# a cost report those are the break-evens, the latencies and test accuracy, without one (a
# sweep) test accuracy and loss, train seconds and the best validation figures.
_TRAINING_METRICS = {
  "final_test_accuracy": "trial/test_accuracy",
  "final_test_loss": "trial/test_loss",
  "best_val_accuracy": "trial/val_accuracy",
  "best_val_loss": "trial/val_loss",
  "train_seconds": "trial/train_seconds",
}


def summary_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), SUMMARY_RUN)


def publish_training(
  workdir: str,
  config: ml_collections.ConfigDict,
  step: int,
  summary: dict[str, Any] | None = None,
) -> None:
  """The trial (every config field as an hparam), the config as text and, once the run has a
  summary, its final figures as metrics. Written when a run starts, resumes or ends."""

  def fill(writer: SummaryWriter) -> None:
    # A differing non-hyperparameter would take one of the five columns the dashboard ticks.
    hparams = config_lib.flatten(config)
    writer.hparams(
      {k: v for k, v in hparams.items() if k not in config_lib.NOT_HYPERPARAMETERS}, step
    )
    writer.text("config", "```json\n" + config.to_json(indent=2) + "\n```", step)
    if summary is not None:
      writer.scalars(training_metrics(summary), step)

  replace_part(summary_dir(workdir), "training", fill)


def training_metrics(summary: dict[str, Any]) -> dict[str, float]:
  return {
    tag: float(summary[key])
    for key, tag in _TRAINING_METRICS.items()
    if isinstance(summary.get(key), (int, float))
  }


def publish_report(
  workdir: str,
  step: int,
  name: str,
  markdown: str,
  figures: Sequence[str] = (),
  metrics: dict[str, float] | None = None,
) -> None:
  """A report (`name`: report, bench, ...): its markdown in the Text tab, its PNG figures in
  the Images tab, its headline as trial metrics. Images are tagged `trial/<file stem>`: Time
  Series shows images too, sorted with the scalars by tag group, after the training curves."""

  def fill(writer: SummaryWriter) -> None:
    writer.text(name, markdown, step)
    for path in figures:
      if path.endswith(".png") and os.path.isfile(path):
        with open(path, "rb") as f:
          writer.image(f"trial/{os.path.splitext(os.path.basename(path))[0]}", f.read(), step)
    if metrics:
      writer.scalars({k: v for k, v in metrics.items() if v is not None}, step)

  replace_part(summary_dir(workdir), name, fill)
