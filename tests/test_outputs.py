"""research/outputs.py: a write that fails part-way keeps the old file and leaves no temporary; a
set of files is written whole or not at all (a directory replaced whole: tests/test_storage.py);
markdown tables escape pipes and align columns; no output lands on a run's own files or on an
input (research/run_files.py)."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from research.outputs import (
  OutputError,
  check_output_dir,
  check_output_file,
  check_output_prefix,
  markdown_table,
  write_all,
  write_npz,
  write_text,
)
from research.run_files import check_targets

# A full disk, made real: the child may not grow a file past 4 KiB, so its write fails part-way
# (EFBIG, with SIGXFSZ ignored) after the temporary already holds 4 KiB.
_CUT_SHORT = """
import errno, resource, signal, sys
from research.outputs import write_json
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
  write_json(sys.argv[1], {"values": list(range(100_000))})
except OSError as e:
  sys.exit(0 if e.errno == errno.EFBIG else 2)
sys.exit(3)  # the write did not fail: the test would prove nothing
"""


def test_a_write_cut_short_keeps_the_old_file_and_leaves_no_temporary(repo_root, tmp_path):
  path = tmp_path / "report.json"
  write_text(str(path), '{"old": true}\n')
  result = subprocess.run(
    [sys.executable, "-c", _CUT_SHORT, str(path)],
    env={**os.environ, "PYTHONPATH": repo_root},
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert result.returncode == 0, result.stderr
  assert path.read_text() == '{"old": true}\n'
  assert os.listdir(tmp_path) == ["report.json"]


def test_an_error_while_writing_an_npz_keeps_the_old_file(tmp_path):
  path = tmp_path / "data.npz"
  write_npz(str(path), x=np.arange(3))

  class Unsavable:
    def __array__(self, *args, **kwargs):
      raise RuntimeError("cannot be saved")

  with pytest.raises(RuntimeError, match="cannot be saved"):
    write_npz(str(path), x=np.arange(5), y=Unsavable())
  assert os.listdir(tmp_path) == ["data.npz"]
  assert np.load(path)["x"].tolist() == [0, 1, 2]


def test_write_all_writes_every_file_or_none(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  first, second = str(tmp_path / "t.md"), str(blocker / "t.json")
  with pytest.raises(OutputError, match=f"cannot write {second} .*; choose another --out"):
    write_all({first: "table\n", second: "{}\n"}, flag="--out")
  assert os.listdir(tmp_path) == ["a_file"]
  write_all({first: "table\n", str(tmp_path / "t.bin"): b"\x00"})
  assert open(first).read() == "table\n"
  assert sorted(os.listdir(tmp_path)) == ["a_file", "t.bin", "t.md"]


def test_markdown_table_escapes_pipes_and_aligns_columns():
  table = markdown_table(["model", "max |Δ|"], [["cnn", 5210]], align="lr")
  assert table.splitlines() == ["| model | max \\|Δ\\| |", "|---|---:|", "| cnn | 5210 |"]
  assert markdown_table(["a", "b"], []).splitlines()[1] == "|---|---|"


def _fake_run(path):
  """A run directory as training leaves it (the check reads names, not contents)."""
  os.makedirs(path / "checkpoints" / "40")
  (path / "config.json").write_text('{"seed": 0}\n')
  (path / "summary.json").write_text("{}\n")
  (path / "events.out.tfevents.1.host.1.0").write_bytes(b"")
  return path


def _files(root):
  return {
    os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
    for d, _, fs in os.walk(root)
    for f in fs
  }


def test_no_output_lands_on_a_runs_own_files_in_any_run(tmp_path):
  run = _fake_run(tmp_path / "runs" / "cnn")
  sweep = tmp_path / "sweep"
  sweep.mkdir()
  (sweep / "sweep.json").write_text("{}\n")
  os.symlink(run, tmp_path / "link")
  before = _files(tmp_path)
  refused = [
    (check_output_prefix, str(run / "config"), (".onnx", ".json"), "config.json"),  # F9's OUT.json
    (check_output_prefix, str(run / "summary"), (".md", ".json", ".csv"), "summary.json"),
    (check_output_file, str(run / "config.json"), (), "config.json"),
    (check_output_file, str(run / "checkpoints" / "40" / "p.npy"), (), "checkpoints"),
    (check_output_file, str(run / "events.out.tfevents.1.host.1.0"), (), "tfevents"),
    (check_output_file, str(run / "report.json"), (), "report.json"),
    (check_output_file, str(run / ".lock"), (), ".lock"),
    (check_output_prefix, str(run / "numerics"), (".json",), "numerics.json"),
    (check_output_file, str(tmp_path / "link" / "config.json"), (), "config.json"),  # a symlink
    (check_output_file, str(run / "new" / ".." / "config.json"), (), "config.json"),
    (check_output_file, str(sweep / "sweep.md"), (), "sweep.md"),
  ]
  for check, path, suffixes, name in refused:
    with pytest.raises(OutputError, match=f"^--out {re.escape(path)} would .*{re.escape(name)}"):
      check(path, "--out", suffixes) if suffixes else check(path, "--out")
  with pytest.raises(OutputError, match="would overwrite .*bench .*inference benchmark"):
    check_output_dir(str(run / "bench"), "--out", names=["bench.json"])
  assert _files(tmp_path) == before  # nothing written, config.json byte for byte
  # Names that are not a run's own may go into it, as the docs show (runs/cnn/model.onnx).
  check_output_file(str(run / "model.onnx"), "--out")
  check_output_prefix(str(run / "preds"), "--out", (".csv", ".json"))
  check_output_dir(str(run / "exported"), "--out", names=["report.json"])
  check_output_file(str(tmp_path / "config.json"), "--out")  # tmp_path is no run


def test_a_command_writes_its_own_run_files_and_protects_runs_it_is_about_to_make(tmp_path):
  run = _fake_run(tmp_path / "run")
  bench = str(run / "bench")
  check_output_dir(bench, "--out", names=["bench.json"], own=[bench])  # bench_inference's default
  other = _fake_run(tmp_path / "other")  # but another run's benchmark is not this command's
  with pytest.raises(OutputError, match=f"would overwrite {other / 'bench'} "):
    check_output_dir(str(other / "bench"), "--out", names=["bench.json"], own=[bench])
  fresh = str(tmp_path / "sweep" / "seed=0")  # a run a sweep will make: no config.json yet
  check_output_prefix(fresh + "/config", "--out", (".md", ".json"))
  with pytest.raises(OutputError, match="seed=0/config.json \\(the run's config"):
    check_output_prefix(fresh + "/config", "--out", (".md", ".json"), runs=[fresh])


def test_an_output_that_is_an_input_is_refused(tmp_path):
  src = tmp_path / "x.csv"
  src.write_text("1,2\n")
  os.symlink(src, tmp_path / "alias.csv")
  os.link(src, tmp_path / "hard.csv")
  for out in (src, tmp_path / "alias.csv", tmp_path / "hard.csv", tmp_path / "d" / ".." / "x.csv"):
    with pytest.raises(OutputError, match=f"would overwrite {src}, the --input this command reads"):
      check_output_file(str(out), "--output", inputs=[("--input", str(src))])
  assert src.read_text() == "1,2\n"
  check_targets("--output", "p.csv", [str(tmp_path / "p.csv")], inputs=[("--input", str(src))])
