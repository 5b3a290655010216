"""What a researcher sees in TensorBoard, read back with TensorBoard's own readers and plugins:
HParams trials named by run with the differing hparams first, the summary run's text, images
and metrics, per-step training curves, profiler traces, and no duplicated or empty files."""

import glob
import json
import os
import re
import shutil

import pytest
from tensorboard.backend.event_processing import data_provider as tb_data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer as tb_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import hparams_plugin
from werkzeug import test as werkzeug_test

from research import dashboard
from research.config import ConfigError, load_config
from research.tensorboard_writer import replace_part
from research.training.loop import train_and_evaluate
from research.training.profiling import parse_window

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(workdir, experiment="mnist1d_cnn", *overrides):
  """The experiment's tiny variant: 40 steps, evaluated every 20."""
  config = load_config(os.path.join(ROOT, "experiments", f"{experiment}.py:tiny"), list(overrides))
  return train_and_evaluate(config, str(workdir), progress=False)


def _accumulator(path) -> EventAccumulator:
  acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
  acc.Reload()
  return acc


def _hparams_dashboard(logdir):
  """The HParams plugin's own answers, as the dashboard requests them."""
  mux = tb_multiplexer.EventMultiplexer()
  mux.AddRunsFromDirectory(str(logdir))
  mux.Reload()
  context = base_plugin.TBContext(
    logdir=str(logdir),
    multiplexer=mux,
    data_provider=tb_data_provider.MultiplexerDataProvider(mux, str(logdir)),
  )
  apps = hparams_plugin.HParamsPlugin(context).get_plugin_apps()

  def post(route, body):
    reply = werkzeug_test.Client(apps[route]).post(
      route, data=json.dumps(body), content_type="application/json"
    )
    assert reply.status_code == 200, reply.get_data()[:500]
    return json.loads(reply.get_data())

  experiment = post("/experiment", {"experimentName": ""})
  groups = post(
    "/session_groups",
    {
      "experimentName": "",
      "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
      "colParams": [],
      "startIndex": 0,
      "sliceSize": 100,
    },
  )["sessionGroups"]
  return experiment, {g["name"]: g for g in groups}


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory, tiny_cnn_run, tiny_mlp_run):
  """Runs that differ in learning rate and in model, as a researcher compares them: the shared
  tiny CNN (learning rate 1e-2) and MLP, copied, and the CNN at 3e-3."""
  logdir = tmp_path_factory.mktemp("runs")
  shutil.copytree(tiny_cnn_run[0], logdir / "cnn_lr1e-2")
  shutil.copytree(tiny_mlp_run[0], logdir / "mlp")
  summaries = {
    "cnn_lr1e-2": tiny_cnn_run[1],
    "cnn_lr3e-3": _train(logdir / "cnn_lr3e-3", "mnist1d_cnn", "optimizer.learning_rate=3e-3"),
    "mlp": tiny_mlp_run[1],
  }
  return logdir, summaries


@pytest.mark.slow
def test_hparams_trials_are_named_by_run_with_the_differing_hparams_first(three_runs):
  logdir, summaries = three_runs
  experiment, groups = _hparams_dashboard(logdir)
  # Named by the run (its summary sub-run), not by a hash of the values.
  assert set(groups) == {f"{name}/summary" for name in summaries}
  # TensorBoard ticks the first five hparams; the ones that differ come first.
  first_five = [h["name"] for h in experiment["hparamInfos"][:5]]
  assert {"optimizer.learning_rate", "model.name"} <= set(first_five)
  differs = {h["name"] for h in experiment["hparamInfos"] if h.get("differs")}
  assert "optimizer.learning_rate" in differs and "batch_size" not in differs
  assert all(h.get("differs") for h in experiment["hparamInfos"][: len(differs)])
  metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
  assert metrics[0] == "trial/test_accuracy"  # ticked by default, the training curves are not
  assert not [m for m in metrics if not m.startswith("trial/")]
  for name, summary in summaries.items():
    group = groups[f"{name}/summary"]
    values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    assert values["trial/test_accuracy"] == pytest.approx(summary["final_test_accuracy"])
    assert group["hparams"]["model.name"] == summary["model"]
  assert groups["cnn_lr3e-3/summary"]["hparams"]["optimizer.learning_rate"] == pytest.approx(3e-3)


@pytest.mark.slow
def test_time_series_hold_every_step_and_the_summary_holds_the_config(three_runs):
  logdir, _ = three_runs
  run = _accumulator(logdir / "mlp")
  scalars = run.Tags()["scalars"]
  assert [e.step for e in run.Scalars("train/loss")] == list(range(1, 41))  # every step
  assert [e.step for e in run.Scalars("train/learning_rate")] == list(range(1, 41))
  assert [e.step for e in run.Scalars("test/accuracy")] == [20, 40]
  assert not [t for t in scalars if t.startswith("trial/")]  # single values live elsewhere
  summary = _accumulator(logdir / "mlp" / "summary")
  (config_text,) = summary.Tensors("config")
  text = config_text.tensor_proto.string_val[0].decode()
  assert '"name": "mlp"' in text and config_text.step == 40
  # Time Series sorts card groups by name (plain string order): the trial's single values and
  # figures come after the test and training curves.
  groups = {t.split("/")[0] for t in run.Tags()["scalars"]}
  assert groups == {"test", "train", "train_speed"}
  assert min(t.split("/")[0] for t in summary.Tags()["scalars"]) > max(groups)


def test_resume_rewrites_the_trial_and_leaves_no_empty_event_files(tmp_path, tiny_mlp_run):
  workdir = tmp_path / "run"
  shutil.copytree(tiny_mlp_run[0], workdir)  # trained to step 40
  _train(workdir, "mnist1d_mlp", "num_steps=60")  # extended
  _train(workdir, "mnist1d_mlp", "num_steps=60")  # finished: nothing to do, nothing written
  (part,) = glob.glob(str(workdir / "summary" / "*tfevents*"))
  assert part.endswith(".training")
  summary = _accumulator(workdir / "summary")
  (text,) = summary.Tensors("config")
  assert '"num_steps": 60' in text.tensor_proto.string_val[0].decode() and text.step == 60
  assert [e.step for e in summary.Scalars("trial/test_accuracy")] == [60]
  event_files = glob.glob(str(workdir / "*tfevents*"))
  assert len(event_files) == 2  # one per training session; the finished re-run made none
  steps = [e.step for e in _accumulator(workdir).Scalars("train/loss")]
  assert steps == list(range(1, 61))


def test_a_report_part_replaces_its_last_version(tmp_path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  figure = tmp_path / "fig.png"
  plt.figure(figsize=(2, 1)).savefig(figure)
  png = figure.read_bytes()
  for value in (1.0, 2.0):
    dashboard.publish_report(
      str(tmp_path), 7, "report", f"# report {value}", [str(figure)], {"trial/x": value}
    )
  assert len(glob.glob(str(tmp_path / "summary" / "*tfevents*"))) == 1
  acc = _accumulator(tmp_path / "summary")
  assert [(e.step, e.value) for e in acc.Scalars("trial/x")] == [(7, 2.0)]
  assert acc.Images("trial/fig")[0].encoded_image_string == png
  (text,) = acc.Tensors("report")
  assert text.tensor_proto.string_val[0].decode() == "# report 2.0"
  # The staging file never stays behind, and a part that fails to write keeps the old one.
  with pytest.raises(ZeroDivisionError):
    replace_part(str(tmp_path / "summary"), "report", lambda w: (w.scalar("y", 1, 0), 1 / 0))
  assert sorted(os.listdir(tmp_path / "summary")) == [
    os.path.basename(p) for p in glob.glob(str(tmp_path / "summary" / "*tfevents*"))
  ]
  assert [e.value for e in _accumulator(tmp_path / "summary").Scalars("trial/x")] == [2.0]


@pytest.mark.slow
def test_profile_steps_trace_loads_and_changes_no_number(tmp_path, tiny_mlp_run):
  from xprof.convert import raw_to_tool_data

  plain_dir, plain = tiny_mlp_run
  profiled = _train(tmp_path / "profiled", "mnist1d_mlp", "profile_steps=12:15")
  assert profiled["final_test_loss"] == plain["final_test_loss"]  # bitwise
  (xplane,) = glob.glob(str(tmp_path / "profiled" / "plugins" / "profile" / "*" / "*.xplane.pb"))
  # The conversion the Profile tab's trace viewer runs on the file.
  data, content_type = raw_to_tool_data.xspace_to_tool_data([xplane], "trace_viewer@", {})
  assert content_type == "application/json"
  trace = json.loads(data)
  names = {e.get("name", "") for e in trace["traceEvents"]}
  assert any("train_chunk" in n for n in names), sorted(names)[:50]
  # One step marker per traced step (13, 14, 15), so the overview page knows the step time.
  markers = sorted(
    e["name"] for e in trace["traceEvents"] if e.get("name", "").startswith("train ")
  )
  assert markers == ["train 13", "train 14", "train 15"]
  overview, _ = raw_to_tool_data.xspace_to_tool_data([xplane], "overview_page", {})
  (average,) = re.findall(rb'"steptime_ms_average":"?([0-9.]+)', overview)
  assert float(average) > 0
  assert not os.path.exists(os.path.join(plain_dir, "plugins"))


@pytest.mark.parametrize("spec", ["5", "a:b", "10:5", "0:99999", ":3"])
def test_bad_profile_steps_are_one_clear_error(spec):
  with pytest.raises(ValueError, match="profile_steps"):
    parse_window(spec, 6000)
  with pytest.raises(ConfigError, match="profile_steps"):  # load_config validates
    load_config(os.path.join(ROOT, "experiments/mnist1d_mlp.py"), [f"profile_steps={spec}"])


def test_profile_window_cuts_chunks_only_at_its_edges():
  from research.training.profiling import ProfileWindow

  window = ProfileWindow("12:15", 20, "/nonexistent")
  assert [window.chunk_length(s, 10) for s in (0, 10, 12, 13, 14, 15)] == [10, 2, 1, 1, 1, 10]
  assert ProfileWindow("", 20, "/x").chunk_length(10, 10) == 10


def test_screenshot_script_errors_are_one_line_and_write_nothing(tmp_path, script_here):
  out = tmp_path / "shots"
  for args in (
    ["--logdir", str(tmp_path / "missing")],
    ["--logdir", str(tmp_path), "--chromium", str(tmp_path / "no-chromium")],
  ):
    code, _, stderr = script_here("screenshot_dashboard.py", *args, "--out", out)
    assert code == 1
    assert stderr.count("\n") == 1 and stderr.startswith("error: ")
    assert not out.exists()
