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
  # CSV holds numbers as stored, for a csv reader; markdown keeps separators and 4 decimals.
  assert csv.stdout.splitlines()[1].startswith("a,exp_a,cnn1d,5210,100,0.91,")


def test_compare_runs_rejects_a_directory_without_summary(repo_root, tmp_path):
  result = _script(repo_root, "compare_runs.py", str(tmp_path))
  assert result.returncode != 0
  assert (
    result.stderr.strip().splitlines()[-1].startswith("error:")
    and "no summary.json" in result.stderr
  )


# --- Defaults never write into results/ (committed measurements) ---------------------------------


class _Parsed(Exception):
  """Raised in place of parsing, carrying the parser a script built."""

  def __init__(self, parser):
    super().__init__()
    self.parser = parser


def _script_parser(path, monkeypatch):
  """The argparse parser `main()` builds: imported as a module, stopped where it would parse."""
  import argparse
  import importlib.util

  spec = importlib.util.spec_from_file_location(f"_script_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)

  def capture(self, *args, **kwargs):
    raise _Parsed(self)

  monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
  try:
    module.main()
  except _Parsed as parsed:
    return parsed.parser
  finally:
    monkeypatch.undo()
  raise AssertionError(f"{path}: main() returned without parsing its flags")


def _under_results(repo_root, value):
  if not isinstance(value, str) or not value:
    return False
  results = os.path.join(repo_root, "results")
  path = os.path.normpath(os.path.join(repo_root, value))
  return path == results or path.startswith(results + os.sep)


def _defaults_under_results(repo_root, parser):
  found = []
  for action in parser._actions:
    values = action.default if isinstance(action.default, (list, tuple)) else [action.default]
    found += [f"{action.dest}={v}" for v in values if _under_results(repo_root, v)]
  return found


def _results_literals(repo_root, path):
  """String constants that start a path under results/ ('results/...', or 'results' joined into a
  path), other than docstrings and help texts: a default computed after parsing."""
  import ast
  import re

  tree = ast.parse(open(path).read())
  prose, joined = set(), set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node):
      prose.add(id(node.body[0].value))
    if isinstance(node, ast.keyword) and node.arg in ("help", "description", "epilog"):
      prose.update(id(n) for n in ast.walk(node.value))
    if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "join":
      joined.update(id(a) for a in node.args)
  return [
    f"line {n.lineno}: {n.value!r}"
    for n in ast.walk(tree)
    if isinstance(n, ast.Constant)
    and isinstance(n.value, str)
    and id(n) not in prose
    and (re.match(r"(\./)?results/", n.value) or (n.value == "results" and id(n) in joined))
  ]


def test_no_script_writes_into_results_by_default(repo_root, monkeypatch, tmp_path):
  import argparse
  import glob

  # Every entry point with flags: scripts/, and tools/ where a script only starts a tool
  # (scripts/fault_campaign.py execs tools/fault_campaign.py).
  scripts = sorted(glob.glob(os.path.join(repo_root, "scripts", "*.py")))
  scripts += sorted(glob.glob(os.path.join(repo_root, "tools", "*.py")))
  scripts = [p for p in scripts if "\ndef main(" in open(p).read()]
  assert len(scripts) >= 14
  offending = {}
  for path in scripts:
    parser = _script_parser(path, monkeypatch)
    bad = _defaults_under_results(repo_root, parser) + _results_literals(repo_root, path)
    if bad:
      offending[os.path.basename(path)] = bad
  assert not offending, f"defaults under results/ (pass --out results/... explicitly): {offending}"
  # The check catches what it is for: a default into results/, however it is spelled.
  canary = argparse.ArgumentParser()
  canary.add_argument("--out", default="./results/../results/table")
  canary.add_argument("--peer", action="append", default=["runs/x", "results/y.onnx"])
  canary.add_argument("--md", default="resultsish/x.md")
  assert _defaults_under_results(repo_root, canary) == [
    "out=./results/../results/table",
    "peer=results/y.onnx",
  ]
  canary_script = os.path.join(str(tmp_path), "canary.py")
  with open(canary_script, "w") as f:
    f.write(
      '"""Writes results/x.md."""\nimport os\n\n\ndef main(args):\n'
      '  record = {"results": []}\n'
      '  return args.out or os.path.join("results", "x"), f"results/{args.name}.md", record\n'
    )
  assert [s.split(":")[0] for s in _results_literals(repo_root, canary_script)] == ["line 7"] * 2


# --- One error base: every error a user can cause is a UserError, one line from run_main ---------


def test_every_user_error_derives_from_one_base_and_keeps_its_builtin_base():
  from research.checkpoint import CheckpointError
  from research.config import ConfigError
  from research.cost import CostError
  from research.data import DataError
  from research.errors import UserError
  from research.kernels import KernelError
  from research.models import ModelError
  from research.outputs import OutputError
  from research.serving import InferenceError
  from research.serving.export import ExportError
  from research.serving.generate import GenerationError
  from research.studies import StudyError
  from research.training.loop import TrainingError
  from research.training.parallel import ParallelError
  from research.training.sweep import SweepError
  from research.workdir import WorkdirError

  value_errors = (ConfigError, CostError, DataError, KernelError, ModelError, OutputError)
  value_errors += (InferenceError, ExportError, GenerationError, ParallelError, SweepError)
  runtime_errors = (CheckpointError, StudyError, TrainingError, WorkdirError)
  for cls in value_errors + runtime_errors:
    assert issubclass(cls, UserError), cls
  assert all(issubclass(c, ValueError) for c in value_errors)
  assert all(issubclass(c, RuntimeError) for c in runtime_errors)


def test_run_main_prints_a_user_error_as_one_line_and_lets_a_bug_through(capsys):
  import pytest

  from research.cli import run_main
  from research.data import DataError

  def bad_input():
    raise DataError("file x.npz is broken:\n  quoted library message\n\nsecond line")

  with pytest.raises(SystemExit) as e:
    run_main(bad_input)
  assert e.value.code == 1
  err = capsys.readouterr().err
  assert err == "error: file x.npz is broken:; quoted library message; second line\n"

  def bug():
    raise ValueError("a bug, not bad input")

  with pytest.raises(ValueError, match="a bug"):
    run_main(bug)


# --- Layering: imports only go down ---------------------------------------------------------------

CORE = ("config", "config_checks", "cli", "errors", "workdir", "checkpoint", "data", "models")
CORE += ("kernels", "training", "serving", "bench", "cost")


def _project_imports(path):
  """Every research.* module a file imports, at the top or inside a function."""
  import ast

  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
  return {m for m in found if m.startswith("research.")}


def test_imports_never_go_up_the_layers(repo_root):
  """Models import only models, kernels and errors (pure math); config and cost import no
  training; no core module imports a study."""
  package = os.path.join(repo_root, "research")
  wrong = []
  for folder, _, files in os.walk(package):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(folder, name)
      top = os.path.relpath(path, package).split(os.sep)[0].removesuffix(".py")
      for module in _project_imports(path):
        layer = module.split(".")[1]
        if (
          (top == "models" and layer not in ("models", "kernels", "errors"))
          or (top in ("config", "config_checks", "cost") and layer == "training")
          or (top in CORE and layer == "studies")
        ):
          wrong.append(f"{os.path.relpath(path, repo_root)} imports {module}")
  assert not wrong, wrong
