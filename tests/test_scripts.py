"""Entry points that need no training: compare_runs on summaries the test writes."""

import json
import os
import subprocess
import sys


def _script(repo_root, name, *args):
  return subprocess.run(
    [sys.executable, os.path.join(repo_root, "scripts", name), *args],
    capture_output=True,
    text=True,
    timeout=60,
    cwd=repo_root,
  )


def test_compare_runs_tabulates_summaries(repo_root, tmp_path):
  for name, acc in (("a", 0.91), ("b", 0.5)):
    d = tmp_path / name
    d.mkdir()
    (d / "summary.json").write_text(
      json.dumps(
        {
          "experiment": f"exp_{name}",
          "model": "cnn1d",
          "params": 5210,
          "steps": 100,
          "final_test_accuracy": acc,
          "best_test_accuracy": acc,
          "best_step": 100,
          "final_test_loss": 1.0,
          "train_seconds": 1.5,
          "compile_seconds": 2.0,
          "steps_per_second": 66.7,
          "device": "cpu:cpu",
        }
      )
    )
  md = _script(repo_root, "compare_runs.py", str(tmp_path / "a"), str(tmp_path / "b"))
  assert md.returncode == 0, md.stderr
  lines = md.stdout.strip().splitlines()
  assert len(lines) == 4 and "exp_a" in lines[2] and "0.9100" in lines[2] and "0.5000" in lines[3]
  csv = _script(repo_root, "compare_runs.py", "--format", "csv", str(tmp_path / "a"))
  assert csv.stdout.splitlines()[1].startswith('a,exp_a,cnn1d,"5,210",100,0.9100')


def test_compare_runs_rejects_a_directory_without_summary(repo_root, tmp_path):
  result = _script(repo_root, "compare_runs.py", str(tmp_path))
  assert result.returncode != 0
  assert (
    result.stderr.strip().splitlines()[-1].startswith("error:")
    and "no summary.json" in result.stderr
  )
