"""Table 1 reproduction: the shuffled variant, seeds, and a tiny end-to-end table."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from research.config import load_config
from research.data.mnist1d import load_mnist1d
from research.studies.mnist1d_table1 import format_summary
from research.studies.mnist1d_table1.plan import (
  EXPECTED_SECONDS,
  merge_jobs,
  plan_jobs,
  torch_groups,
)
from research.studies.mnist1d_table1.report import summarize, torch_comparison
from research.studies.mnist1d_table1.workers import cache_path, cached_result
from research.training.multi_seed import train_side_by_side


def column_permutation(shuffled, original):
  """P with shuffled[:, j] == original[:, P[j]] for every row, or None."""
  perm = []
  for j in range(shuffled.shape[1]):
    match = [k for k in range(original.shape[1]) if np.array_equal(shuffled[:, j], original[:, k])]
    if len(match) != 1:
      return None
    perm.append(match[0])
  return np.array(perm)


def test_shuffled_variant_is_one_fixed_permutation_for_train_and_test():
  original, shuffled = load_mnist1d(), load_mnist1d(shuffle_seq=True)
  perm = column_permutation(shuffled.x_train, original.x_train)
  assert perm is not None and sorted(perm) == list(range(40))
  assert not np.array_equal(perm, np.arange(40))
  np.testing.assert_array_equal(shuffled.x_test, original.x_test[:, perm])
  np.testing.assert_array_equal(shuffled.y_train, original.y_train)


def tiny(model="mlp"):
  return load_config(f"experiments/mnist1d_{model}.py:tiny")


@pytest.mark.slow
def test_seeds_change_initialization_only():
  data = load_mnist1d()
  r = train_side_by_side(tiny(), [data] * 3, [5, 5, 6])
  same = [jax.tree.leaves(jax.tree.map(lambda a, i=i: a[i], r["final_params"])) for i in range(3)]
  for a, b in zip(same[0], same[1]):
    np.testing.assert_array_equal(a, b)  # same seed, same data order: the same run
  assert r["final_test_accuracy"][0] == r["final_test_accuracy"][1]
  assert any(not np.array_equal(a, c) for a, c in zip(same[0], same[2]))


@pytest.mark.slow
def test_member_matches_a_single_run_with_its_seed():
  data = load_mnist1d()
  both = train_side_by_side(tiny("logistic"), [data, data], [0, 1])
  alone = train_side_by_side(tiny("logistic"), [data], [1])
  np.testing.assert_allclose(both["final_test_loss"][1], alone["final_test_loss"][0], rtol=1e-5)


MODELS = ("logistic", "mlp", "cnn", "gru")
MEMBERS = [(v, s) for v in ("original", "shuffled") for s in range(3)]


def test_jobs_cover_every_run_once_longest_first_none_too_long():
  jobs = plan_jobs(MODELS, MEMBERS, workers=2)
  for m in MODELS:
    mine = [x for model, ms in jobs if model == m for x in ms]
    assert sorted(mine) == sorted(MEMBERS)  # each (variant, seed) of each model exactly once
  cost = [EXPECTED_SECONDS[m] * len(ms) for m, ms in jobs]
  assert cost == sorted(cost, reverse=True)
  total = sum(EXPECTED_SECONDS[m] for m in MODELS) * len(MEMBERS)
  assert max(cost) <= total / 4 + 1e-9  # half of one worker's share
  per_model = {m: sum(1 for model, _ in jobs if model == m) for m in MODELS}
  assert per_model["logistic"] == per_model["mlp"] == 1  # cheap models compile once
  assert per_model["gru"] > 1
  # One worker: nothing to balance, so every model is one job (one compilation).
  assert [len(ms) for _, ms in plan_jobs(MODELS, MEMBERS, workers=1)] == [6] * 4


def test_merge_restores_member_order_and_sums_time():
  def part(members, acc):
    return {
      "members": [{"variant": v, "seed": s} for v, s in members],
      "final_test_accuracy": acc,
      "final_test_loss": acc,
      "best_test_accuracy": acc,
      "best_step": [1] * len(acc),
      "train_seconds": 1.0,
      "compile_seconds": 2.0,
      "eval_seconds": 0.5,
      "wall_seconds": 4.0,
      "params": 7,
    }

  done = {
    ("gru", (("shuffled", 1), ("original", 2))): part(
      [("shuffled", 1), ("original", 2)], [0.51, 0.92]
    ),
    ("gru", (("original", 0), ("original", 1))): part(
      [("original", 0), ("original", 1)], [0.90, 0.91]
    ),
  }
  merged = merge_jobs(done, ["gru"])["gru"]
  assert [(m["variant"], m["seed"]) for m in merged["members"]] == [
    ("original", 0),
    ("original", 1),
    ("original", 2),
    ("shuffled", 1),
  ]
  assert merged["final_test_accuracy"] == [0.90, 0.91, 0.92, 0.51]
  assert merged["train_seconds"] == 2.0 and merged["wall_seconds"] == 8.0 and merged["jobs"] == 2
  with pytest.raises(ValueError, match="cnn"):
    merge_jobs(done, ["gru", "cnn"])


def test_torch_reference_runs_spread_over_cores():
  groups = torch_groups(MODELS, [0, 1])
  assert groups == {0: ["gru"], 1: ["cnn", "mlp", "logistic"]}
  assert torch_groups(MODELS, [5]) == {5: ["gru", "cnn", "mlp", "logistic"]}


def test_torch_comparison_states_both_ratios():
  per_model = {
    "cnn": {"members": [{}] * 6, "train_seconds": 12.0},
    "gru": {"members": [{}] * 6, "train_seconds": 30.0},
  }
  ref = {
    "source": "this invocation",
    "per_run_seconds": {"cnn": 10.0, "gru": 60.0},
    "whole_run_seconds": {"cnn": 15.0, "gru": 70.0},
  }
  text = "\n".join(torch_comparison(ref, per_model, wall=42.0))
  assert "420 s of PyTorch training loops" in text and "**10.0x**" in text  # 6 * (10 + 60)
  assert "510 s, **12.1x**" in text  # 6 * (15 + 70) / 42
  assert "| cnn | 10.00 | 15.00 | 6 | 2.00 |" in text
  stored = "\n".join(
    torch_comparison(
      {"source": "results/speed_vs_torch.json", "date": "d", "per_run_seconds": {"cnn": 10.0}},
      per_model,
      42.0,
    )
  )
  assert "not in this invocation" in stored and "No PyTorch time for: gru" in stored
  assert "whole run" not in stored


def test_summary_statistics():
  results = {
    "cnn": {
      "members": [{"variant": v, "seed": s} for v in ("original", "shuffled") for s in range(3)],
      "final_test_accuracy": [0.93, 0.94, 0.95, 0.40, 0.50, 0.60],
      "best_test_accuracy": [0.95] * 6,
      "train_seconds": 1.0,
    }
  }
  rows = summarize(results, {"cnn": {"original": (94, 2), "shuffled": (56, 2)}}, ["cnn"])
  assert [r["variant"] for r in rows] == ["original", "shuffled"]
  assert abs(rows[0]["final_mean"] - 94.0) < 1e-9 and abs(rows[0]["final_sd"] - 1.0) < 1e-9
  assert rows[0]["within_2sd"] and not rows[1]["within_2sd"]  # 50 vs 56 ± 2: 6 > 4
  assert abs(rows[1]["difference"] + 6.0) < 1e-9 and abs(rows[1]["final_sd"] - 10.0) < 1e-9


def test_cached_job_is_reused_only_under_the_same_settings(tmp_path):
  from research.outputs import write_json

  members = (("original", 0), ("shuffled", 1))
  path = cache_path(str(tmp_path), "cnn", members)
  assert os.path.basename(path) == "cnn_original0_shuffled1.json"
  key = {"num_steps": 40, "eval_every": 20, "xla_flags": ""}
  assert cached_result(str(tmp_path), "cnn", members, key) is None
  write_json(path, {"key": key, "result": {"train_seconds": 1.5}})
  assert cached_result(str(tmp_path), "cnn", members, key) == {"train_seconds": 1.5, "cached": True}
  assert cached_result(str(tmp_path), "cnn", members, {**key, "num_steps": 60}) is None


def test_format_summary_lines():
  rows = [
    {
      "model": "cnn",
      "variant": "original",
      "final_mean": 93.25,
      "final_sd": 1.0,
      "paper_mean": 94.0,
      "paper_sd": 2.0,
      "within_2sd": True,
    }
  ]
  report = {
    "rows": rows,
    "wall_seconds": 10.0,
    "per_model": {"cnn": {"members": [{}] * 4}},
    "provenance": {"retrained": [["cnn", []]] * 2, "cached": [], "workers": 2},
    "torch_reference": {
      "source": "this invocation",
      "per_run_seconds": {"cnn": 5.0},
      "whole_run_seconds": {"cnn": 7.5},
    },
  }
  assert format_summary(report, "out/t").splitlines() == [
    "cnn       original  ours  93.2 ± 1.0  paper  94 ± 2  within 2 sd",
    "4 runs in 10.0 s (2 of 2 jobs trained, 2 workers) -> out/t.md",
    "PyTorch, the same runs one after another (this invocation): 20 s of training loops, "
    "2.0x our time; 30 s as whole runs, 3.0x",
  ]
  report["provenance"]["cached"] = [["cnn", []]]  # partly cached: no speed claim
  assert format_summary(report, "t").splitlines()[-1].startswith("4 runs in 10.0 s (2 of 3 jobs")


def test_study_imports_without_torch():
  code = (
    "import sys; sys.modules['torch'] = None\n"
    "import research.studies.mnist1d_table1 as s\n"
    "from research.studies.mnist1d_table1 import plan, report, torch_timing, workers\n"
    "assert 'jax' not in sys.modules, 'the package should not start JAX'\n"
    "assert not hasattr(s, 'ROOT'), 'the checkout is passed in, never found from the package'"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]


def test_torch_reference_models_train(tmp_path):
  pytest.importorskip("torch")
  from research.studies.mnist1d_table1 import torch_reference as ref

  data = {k: v[:300] for k, v in ref.load_data().items()}
  for name in ref.MODELS:
    rec = ref.bench_model(name, data, steps=4, seed=0, eval_every=2)
    assert rec["params"] == ref.EXPECTED_PARAMS[name] and rec["steps"] == 4
    assert [c["step"] for c in rec["test_accuracy_curve"]] == [2, 4]
  meta = ref.provenance(["scripts/bench_torch_reference.py"])
  assert "| logistic | 410 |" in ref.markdown(meta, [rec | {"model": "logistic", "params": 410}])


@pytest.mark.slow
def test_tiny_reproduction_writes_a_well_formed_table(repo_root, tmp_path):
  out, workdir = str(tmp_path / "table"), str(tmp_path / "cache")
  args = [
    sys.executable,
    "scripts/reproduce_mnist1d.py",
    "--config",
    "experiments/mnist1d_table1.py:tiny",  # logistic and MLP, 2 seeds, 40 steps
    "--workdir",
    workdir,
    "--out",
    out,
  ]
  env = {**os.environ, "PYTHONPATH": repo_root}
  first = subprocess.run(args, cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
  assert first.returncode == 0, first.stderr[-3000:]
  report = json.load(open(out + ".json"))
  assert [(r["model"], r["variant"]) for r in report["rows"]] == [
    ("logistic", "original"),
    ("logistic", "shuffled"),
    ("mlp", "original"),
    ("mlp", "shuffled"),
  ]
  assert all(len(r["final"]) == 2 for r in report["rows"])
  md = open(out + ".md").read()
  assert "| mlp | shuffled |" in md and "8 runs" in md
  second = subprocess.run(args, cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
  assert second.returncode == 0
  again = json.load(open(out + ".json"))
  assert again["provenance"]["retrained"] == [] and again["rows"] == report["rows"]
  planned = plan_jobs(
    ("logistic", "mlp"),
    [(v, s) for v in ("original", "shuffled") for s in range(2)],
    report["provenance"]["workers"],
  )
  assert len(again["provenance"]["cached"]) == len(planned)
  assert len(report["provenance"]["retrained"]) == len(planned)
