"""research/outputs.py: a write that fails part-way keeps the old file and leaves no temporary; a
set of files is written whole or not at all; a re-made directory comes back when the block fails;
markdown tables escape pipes and align columns."""

import os
import subprocess
import sys

import numpy as np
import pytest

from research.outputs import (
  OutputError,
  markdown_table,
  replacing_directory,
  write_all,
  write_npz,
  write_text,
)

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


def test_a_re_made_directory_replaces_the_old_one_or_gives_it_back(tmp_path):
  logs = tmp_path / "loadgen"
  logs.mkdir()
  (logs / "old.txt").write_text("old")
  with pytest.raises(KeyboardInterrupt):
    with replacing_directory(str(logs)):
      assert not logs.exists()  # the old one is aside while the block runs
      logs.mkdir()
      (logs / "half.txt").write_text("")
      raise KeyboardInterrupt
  assert os.listdir(logs) == ["old.txt"] and os.listdir(tmp_path) == ["loadgen"]
  with replacing_directory(str(logs)):
    logs.mkdir()
    (logs / "new.txt").write_text("new")
  assert os.listdir(logs) == ["new.txt"] and os.listdir(tmp_path) == ["loadgen"]


def test_markdown_table_escapes_pipes_and_aligns_columns():
  table = markdown_table(["model", "max |Δ|"], [["cnn", 5210]], align="lr")
  assert table.splitlines() == ["| model | max \\|Δ\\| |", "|---|---:|", "| cnn | 5210 |"]
  assert markdown_table(["a", "b"], []).splitlines()[1] == "|---|---|"
