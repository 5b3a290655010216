"""compare_runs over a directory as the README leaves it: runs beside entries that are not runs."""

import csv
import glob
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from research.config import load_config
from research.studies.compare_runs import RunsTable, render
from research.training.loop import train_and_evaluate


@pytest.fixture
def compare(script_here):
  """scripts/compare_runs.py in this process (tests/conftest.py): a result with returncode,
  stdout and stderr, like subprocess.run's."""
  return lambda *args: SimpleNamespace(
    **dict(zip(("returncode", "stdout", "stderr"), script_here("compare_runs.py", *args)))
  )


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
  """Two tiny runs that differ in learning rate, and four entries that are not runs."""
  root = tmp_path_factory.mktemp("runs")
  for name, lr in (("lr_high", "3e-2"), ("lr_low", "1e-3")):
    config = load_config("experiments/mnist1d_logistic.py:tiny", [f"optimizer.learning_rate={lr}"])
    train_and_evaluate(config, str(root / name), progress=False)
  np.savez(root / "mnist1d.npz", x=np.zeros((2, 40)))  # export_dataset.py's output
  (root / "empty").mkdir()
  (root / "failed").mkdir()  # a start that failed before its first summary
  shutil.copy(root / "lr_low" / "config.json", root / "failed" / "config.json")
  shutil.copytree(root / "lr_low", root / "corrupt")
  (root / "corrupt" / "summary.json").write_text('{"experiment": "mnist1d_log')
  return root


def test_skips_entries_that_are_not_runs_and_shows_differing_hyperparameters(
  compare, runs_dir, tmp_path
):
  out = str(tmp_path / "tables" / "runs")
  entries = sorted(glob.glob(str(runs_dir / "*")))
  result = compare(*entries, "--format", "csv", "--out", out)
  assert result.returncode == 0, result.stderr
  stderr = result.stderr.strip().splitlines()
  assert len(stderr) == 1 and stderr[0].startswith("skipped 4 entries that are not runs: ")
  for entry, why in (
    ("corrupt", "corrupt summary.json"),
    ("empty", "no summary.json"),
    ("failed", "unfinished: config.json but no summary.json"),
    ("mnist1d.npz", "not a directory"),
  ):
    assert f"{runs_dir / entry} ({why})" in stderr[0]
  rows = list(csv.reader(result.stdout.splitlines()))
  assert rows[0][:3] == ["run", "optimizer.learning_rate", "experiment"]
  assert [r[:3] for r in rows[1:]] == [
    ["lr_high", "0.03", "mnist1d_logistic"],
    ["lr_low", "0.001", "mnist1d_logistic"],
  ]
  assert open(out + ".csv").read() == result.stdout
  for r in csv.DictReader(result.stdout.splitlines()):  # plain numbers a csv reader can parse
    assert int(r["params"]) > 0 and 0 <= float(r["final_test_accuracy"]) <= 1
  record = json.load(open(out + ".json"))
  assert record["hyperparameters"]["differ"] == ["optimizer.learning_rate"]
  assert record["hyperparameters"]["same"]["model.name"] == "logistic"
  assert len(record["skipped"]) == 4 and [r["run"] for r in record["runs"]] == ["lr_high", "lr_low"]
  md = open(out + ".md").read()
  assert "| run | optimizer.learning_rate | experiment |" in md
  assert "Same in all 2 runs: " in md and "`model.name`=logistic" in md


def test_no_runs_is_one_error_line_and_writes_nothing(compare, runs_dir, tmp_path):
  out = tmp_path / "tables" / "runs"
  not_runs = [str(runs_dir / n) for n in ("mnist1d.npz", "empty", "failed", "corrupt")]
  for fmt in ("md", "csv"):
    result = compare(*not_runs, "--format", fmt, "--out", str(out))
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no runs among the 4 entries given")
    assert "corrupt summary.json" in lines[0] and "python scripts/train.py" in lines[0]
    assert not os.path.exists(tmp_path / "tables")


def test_a_sweep_directory_is_skipped_with_the_glob_that_reaches_its_runs(compare, runs_dir):
  result = compare(str(runs_dir), str(runs_dir / "lr_low"))
  assert result.returncode == 0, result.stderr
  assert f"(no summary.json; it holds 3 runs: pass {runs_dir / '*'})" in result.stderr
  assert "| lr_low |" in result.stdout and "Same in all" not in result.stdout


def test_csv_holds_plain_numbers_where_markdown_groups_thousands():
  row = {"run": "cnn", "params": 5210, "final_test_accuracy": 0.93, "steps": 6000}
  row.update({"break_even_flops": 1234567.0, "train_seconds": None, "config": None})
  table = RunsTable(runs=[row], differ=[], same={}, skipped=[], notes=[])
  assert "| cnn |  |  | 5,210 | 6000 | 0.9300 |" in render(table, "md")
  (parsed,) = csv.DictReader(render(table, "csv").splitlines())
  assert int(parsed["params"]) == 5210 and float(parsed["final_test_accuracy"]) == 0.93
  assert float(parsed["break_even_flops"]) == 1234567.0 and int(parsed["steps"]) == 6000
  assert parsed["train_seconds"] == ""  # unknown stays empty


def test_out_never_writes_over_a_runs_own_files(compare, tiny_cnn_run, tmp_path):
  """F10: `compare_runs.py RUN --out RUN/config` replaced RUN/config.json with the table's JSON.
  Refused in any run directory (not only the runs compared), nothing written."""
  run, other = tmp_path / "run", tmp_path / "other"
  shutil.copytree(tiny_cnn_run[0], run)
  shutil.copytree(tiny_cnn_run[0], other)
  before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  for out, clobbered in (
    (run / "config", run / "config.json"),
    (other / "summary", other / "summary.json"),
    (run / "checkpoints" / "t", run / "checkpoints"),
  ):
    result = compare(str(run), "--format", "csv", "--out", str(out))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and result.stdout == "", result.stderr
    assert lines[0].startswith(f"error: --out {out} would ") and f" {clobbered} (" in lines[0]
  assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
  result = compare(str(run), "--out", str(run / "table"))  # a new name in a run: allowed
  assert result.returncode == 0 and (run / "table.md").exists(), result.stderr
