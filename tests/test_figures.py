"""Figures: PNG, SVG and PDF beside each other; linear bars with their values; the break-evens
drawn where the report says; spread and the saturation batch in the benchmark figures; and
scripts/replot.py re-drawing all of it from saved files, or failing with one `error:` line."""

import json
import os
import runpy
import shutil
import struct
import sys

import numpy as np
import pytest

from research.bench import figures
from research.bench.latency import saturation_batch_size
from research.studies.cost_figure import report_figure

GRU_REPORT = "results/cost/mnist1d_gru/report.json"  # its train batch is not its best batch
CNN_REPORT = "results/cost/mnist1d_cnn/report.json"


def _load(repo_root, path):
  with open(os.path.join(repo_root, path)) as f:
    return json.load(f)


def _replot(repo_root, monkeypatch, *argv):
  """scripts/replot.py in this process (its imports are warm): the exit status."""
  monkeypatch.setattr(sys, "argv", ["replot.py", *map(str, argv)])
  with pytest.raises(SystemExit) as exit_:
    runpy.run_path(os.path.join(repo_root, "scripts/replot.py"), run_name="__main__")
  return exit_.value.code


def _capture(monkeypatch):
  """Keeps the figures the plot functions would save, to inspect their axes."""
  kept = []
  monkeypatch.setattr(figures, "save_figure", lambda fig, path: kept.append(fig) or [path])
  return kept


def _by_gid(fig, gid):
  return [line for ax in fig.axes for line in ax.lines if line.get_gid() == gid]


def _texts(ax):
  return [t.get_text() for t in ax.texts] + [t.get_text() for t in ax.get_legend().get_texts()]


@pytest.mark.parametrize("path", [GRU_REPORT, CNN_REPORT])
def test_report_figure_draws_each_break_even_where_the_report_says(repo_root, path):
  r = _load(repo_root, path)
  be, inf = r["break_even_predictions"], r["time"]["inference"]
  fig = report_figure(r)
  time_ax, flops_ax, break_even_ax, util_ax = fig.axes
  distinct = inf["train_batch"]["batch_size"] != inf["batch"]["batch_size"]
  keys = ["flops", "seconds_realtime", "seconds_batch"] + ["seconds_train_batch"] * distinct
  for key in keys:
    (mark,) = _by_gid(fig, f"break_even_{key}")
    assert mark.axes is break_even_ax
    assert list(mark.get_xdata()) == pytest.approx([be[key]]) and list(mark.get_ydata()) == [1]
    assert any(figures.si(be[key]) in t for t in _texts(break_even_ax)), key
  assert not distinct and not _by_gid(fig, "break_even_seconds_train_batch") or distinct
  headline = [t.get_text() for t in break_even_ax.texts]
  assert headline == [figures.si(be["flops"])]  # the FLOPs break-even is written on the plot

  # Bars start at zero on linear axes, as long as their values, each value written beside it.
  widths = [p.get_width() for p in time_ax.patches]
  modes = ["realtime", "train_batch", "batch"] if distinct else ["realtime", "batch"]
  us = [r["time"]["train_seconds_per_example"] * 1e6] + [
    inf[m]["seconds_per_prediction"] * 1e6 for m in modes
  ]
  assert widths == pytest.approx(us)
  flops = [r["flops"]["train_step_per_example"], r["flops"]["forward_per_example"]]
  assert [p.get_width() for p in flops_ax.patches] == pytest.approx(flops)
  for ax in (time_ax, flops_ax, util_ax):
    assert ax.get_xscale() == "linear" and ax.get_xlim()[0] == 0
  labels = [t.get_text() for t in time_ax.texts]
  assert all(f"{v:.3g} µs" in text for v, text in zip(us, labels))
  assert f"p99 {inf['realtime']['p99_seconds'] * 1e6:.3g} µs" in labels[1]
  figures.plt.close(fig)


def test_replot_redraws_a_saved_report_in_three_formats(repo_root, tmp_path, monkeypatch):
  shutil.copy(os.path.join(repo_root, GRU_REPORT), tmp_path / "report.json")
  assert _replot(repo_root, monkeypatch, tmp_path / "report.json") == 0
  png = (tmp_path / "report.png").read_bytes()
  assert png.startswith(b"\x89PNG\r\n\x1a\n")
  phys = png.index(b"pHYs")
  assert struct.unpack(">II", png[phys + 4 : phys + 12]) == (5906, 5906)  # 150 dpi
  assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")
  svg = (tmp_path / "report.svg").read_text()
  flops = figures.si(_load(repo_root, GRU_REPORT)["break_even_predictions"]["flops"])
  assert f"FLOPs (forward vs the training run): {flops} predictions" in svg  # text stays text


def test_replot_fails_with_one_error_line_on_a_missing_file(
  repo_root, tmp_path, monkeypatch, capsys
):
  assert _replot(repo_root, monkeypatch, tmp_path / "nothere.json") == 1
  assert capsys.readouterr().err.splitlines() == [f"error: {tmp_path / 'nothere.json'} not found"]
  assert not list(tmp_path.iterdir())


def test_replot_refuses_bad_inputs_before_drawing_anything(
  repo_root, tmp_path, monkeypatch, capsys
):
  shutil.copy(os.path.join(repo_root, CNN_REPORT), tmp_path / "report.json")
  (tmp_path / "bench.json").write_text(json.dumps({"records": []}))  # samples never saved
  (tmp_path / "other.json").write_text("{not json")
  for bad, says in (("bench.json", "latency_samples.json not found"), ("other.json", "JSON")):
    assert _replot(repo_root, monkeypatch, tmp_path / "report.json", tmp_path / bad) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0]
  assert sorted(os.listdir(tmp_path)) == ["bench.json", "other.json", "report.json"]


def test_replot_refuses_two_reports_that_would_write_the_same_files(
  repo_root, tmp_path, monkeypatch, capsys
):
  for name, report in (("cnn", CNN_REPORT), ("gru", GRU_REPORT)):
    (tmp_path / name).mkdir()
    shutil.copy(os.path.join(repo_root, report), tmp_path / name / "report.json")
  shutil.copy(tmp_path / "cnn" / "report.json", tmp_path / "cnn" / "older.json")
  out = tmp_path / "figures"
  for argv, clash in (
    ([tmp_path / "cnn" / "report.json", tmp_path / "gru" / "report.json", "--out", out], out),
    ([tmp_path / "cnn" / "report.json", tmp_path / "cnn" / "older.json"], tmp_path / "cnn"),
  ):
    assert _replot(repo_root, monkeypatch, *argv) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert f"report.{{png,svg,pdf}} into {clash}, and only the last would survive" in err[0]
  assert not out.exists() and sorted(os.listdir(tmp_path / "cnn")) == ["older.json", "report.json"]


def _bench(rng):
  """A benchmark's result as benchmark_run returns it (two engines), and its batch-1 samples."""
  records, samples = [], {}
  for engine, scale in (("jax", 1.0), ("onnxruntime", 0.5)):
    base = {"engine": engine, "backend": "cpu", "device": "cpu", "precision": "float32"}
    for b, p50 in ((1, 40.0), (2, 45.0), (4, 60.0), (8, 112.0), (16, 230.0)):
      call = p50 * scale
      records.append(
        {
          **base,
          "kind": "batch",
          "batch_size": b,
          "call_p50_us": call,
          "call_p99_us": 1.5 * call,
          "examples_per_s": b / call * 1e6,
          "us_per_example": call / b,
        }
      )
    tag = f"{engine} cpu float32"
    samples[tag] = {
      side: scale * floor * (1 + rng.gamma(1.5, 0.2, 300))
      for side, floor in (("serving", 60.0), ("floor", 40.0), ("compute", 30.0))
    }
    stats = figures.latency_stats(samples[tag]["serving"] * 1.1)
    records.append({**base, "kind": "realtime_interleaved", "serving": stats})
  result = {"records": records, "settings": {"saturation_fraction": 0.9}}
  return {"provenance": {"experiment": "toy"}, **result}, samples


def test_benchmark_figures_show_spread_saturation_and_who_is_who(monkeypatch, tmp_path):
  result, samples = _bench(np.random.default_rng(0))
  kept = _capture(monkeypatch)
  figures.write_benchmark_figures(result, samples, str(tmp_path), "toy")
  latency, sweep = kept
  engines_ax, cdf_ax = latency.axes
  assert [t.get_text() for t in engines_ax.get_yticklabels()] == list(samples)
  jax = next(r["serving"] for r in result["records"] if r["kind"] == "realtime_interleaved")
  thick = [line for line in engines_ax.lines if line.get_linewidth() == 7][0]
  assert list(thick.get_xdata()) == pytest.approx([jax["p50_us"], jax["p90_us"]])
  assert engines_ax.get_xscale() == "linear" and engines_ax.get_xlim()[0] == 0
  assert {"p50", "p50 to p90", "fastest to p99"} <= set(_texts(engines_ax))
  legend = " | ".join(_texts(cdf_ax))
  assert all(s in legend for s in ("serving path", "bare call", "compute alone"))

  thr_ax, wait_ax = sweep.axes
  for i, (tag, recs) in enumerate(figures.batch_sweeps(result["records"]).items()):
    sat = saturation_batch_size(recs, 0.9)
    (star,) = _by_gid(sweep, f"saturation_{i}")
    assert star.axes is thr_ax and list(star.get_xdata()) == [sat]
    assert any(f"{tag} (saturates at {sat})" == t.get_text() for t in sweep.legends[0].texts)
  assert sat == 4  # within 90 % of the best (batch 8): the star is not simply the maximum
  assert thr_ax.get_yscale() == "linear" and thr_ax.get_ylim()[0] == 0
  assert len(thr_ax.collections) == len(wait_ax.collections) == 2  # p50-p99 bands
  p50 = [r["call_p50_us"] for r in recs]  # the time per call, not its reciprocal per example
  assert list(wait_ax.lines[-2].get_ydata()) == pytest.approx(p50)
  for fig in kept:
    figures.plt.close(fig)


def test_benchmark_samples_are_saved_so_replot_draws_the_same_files(
  repo_root, tmp_path, monkeypatch
):
  monkeypatch.setattr(figures, "FORMATS", ("svg",))  # every coordinate as text; PNG/PDF above
  result, samples = _bench(np.random.default_rng(1))
  first, again = tmp_path / "first", tmp_path / "again"
  written = figures.write_benchmark_figures(result, samples, str(first), "toy")
  names = ["latency_samples.json", "latency.svg", "batch_sweep.svg"]
  assert [os.path.basename(p) for p in written] == names
  saved = figures.read_latency_samples(str(first / "latency_samples.json"))
  for tag, sides in samples.items():
    for side, v in sides.items():
      assert np.abs(saved[tag][side] - v).max() <= 0.05 + 1e-9  # rounded to 0.1 µs, in order
  (first / "bench.json").write_text(json.dumps(result))
  again.mkdir()
  for name in ("bench.json", "latency_samples.json"):
    shutil.copy(first / name, again / name)
  assert _replot(repo_root, monkeypatch, again / "bench.json") == 0
  for name in names:
    assert (again / name).read_bytes() == (first / name).read_bytes(), name


def test_replot_markdown_re_renders_the_committed_text_from_its_json(
  repo_root, tmp_path, monkeypatch
):
  monkeypatch.setattr(figures, "FORMATS", ("svg",))  # the text is what this checks; PNG/PDF above
  for committed in (CNN_REPORT, "results/inference/mnist1d_cnn/bench.json"):
    folder = tmp_path / os.path.basename(os.path.dirname(committed))
    folder.mkdir(exist_ok=True)
    source = os.path.dirname(os.path.join(repo_root, committed))
    for name in os.listdir(source):
      if name.endswith(".json"):
        shutil.copy(os.path.join(source, name), folder / name)
    json_path = folder / os.path.basename(committed)
    assert _replot(repo_root, monkeypatch, "--markdown", json_path) == 0
    md = "report.md" if committed == CNN_REPORT else "bench.md"
    # The committed markdown was rendered from the same JSON: same bytes, nothing re-measured.
    assert (folder / md).read_text() == open(os.path.join(source, md)).read()
