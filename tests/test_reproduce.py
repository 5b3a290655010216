"""Table 1 reproduction: the shuffled variant, seeds, and a tiny end-to-end table."""
import json
import os
import subprocess
import sys

import jax
import numpy as np

from research.config import load_config
from research.data.mnist1d import load_mnist1d
from research.multi_seed import train_side_by_side
from research.reproduce import assign_cores, summarize


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


def tiny(model="mlp", steps=60):
  return load_config(f"experiments/mnist1d_{model}.py", [
      f"num_steps={steps}", "eval_every=20", "log_every=20", "checkpoint_every=20"])


def test_seeds_change_initialization_only():
  data = load_mnist1d()
  r = train_side_by_side(tiny(), [data] * 3, [5, 5, 6])
  same = [jax.tree.leaves(jax.tree.map(lambda a, i=i: a[i], r["final_params"])) for i in range(3)]
  for a, b in zip(same[0], same[1]):
    np.testing.assert_array_equal(a, b)  # same seed, same data order: the same run
  assert r["final_test_accuracy"][0] == r["final_test_accuracy"][1]
  assert any(not np.array_equal(a, c) for a, c in zip(same[0], same[2]))


def test_member_matches_a_single_run_with_its_seed():
  data = load_mnist1d()
  both = train_side_by_side(tiny("logistic"), [data, data], [0, 1])
  alone = train_side_by_side(tiny("logistic"), [data], [1])
  np.testing.assert_allclose(both["final_test_loss"][1], alone["final_test_loss"][0], rtol=1e-5)


def test_cores_are_balanced_longest_first():
  jobs = [(m, v) for m in ("logistic", "mlp", "cnn", "gru") for v in ("original", "shuffled")]
  cores = assign_cores(jobs, [0, 1])
  assert cores[("gru", "original")] != cores[("gru", "shuffled")]
  assert cores[("cnn", "original")] != cores[("cnn", "shuffled")]
  assert set(assign_cores(jobs[:2], [3]).values()) == {3}


def test_summary_statistics():
  results = {"cnn": {"members": [{"variant": v, "seed": s} for v in ("original", "shuffled")
                                 for s in range(3)],
                     "final_test_accuracy": [0.93, 0.94, 0.95, 0.40, 0.50, 0.60],
                     "best_test_accuracy": [0.95] * 6, "train_seconds": 1.0}}
  rows = summarize(results, {"cnn": {"original": (94, 2), "shuffled": (56, 2)}}, ["cnn"])
  assert [r["variant"] for r in rows] == ["original", "shuffled"]
  assert abs(rows[0]["final_mean"] - 94.0) < 1e-9 and abs(rows[0]["final_sd"] - 1.0) < 1e-9
  assert rows[0]["within_2sd"] and not rows[1]["within_2sd"]  # 50 vs 56 ± 2: 6 > 4
  assert abs(rows[1]["difference"] + 6.0) < 1e-9 and abs(rows[1]["final_sd"] - 10.0) < 1e-9


def test_tiny_reproduction_writes_a_well_formed_table(repo_root, tmp_path):
  cfg = tmp_path / "table.py"
  cfg.write_text(open(os.path.join(repo_root, "experiments", "mnist1d_table1.py")).read()
                 .replace('("logistic", "mlp", "cnn", "gru")', '("logistic", "mlp")'))
  out, workdir = str(tmp_path / "table"), str(tmp_path / "cache")
  args = [sys.executable, "scripts/reproduce_mnist1d.py", "--config", str(cfg),
          "--config.num_steps=40", "--config.eval_every=20", "--config.log_every=20",
          "--config.seeds=2",
          "--workdir", workdir, "--out", out]
  env = {**os.environ, "PYTHONPATH": repo_root}
  first = subprocess.run(args, cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
  assert first.returncode == 0, first.stderr[-3000:]
  report = json.load(open(out + ".json"))
  assert [(r["model"], r["variant"]) for r in report["rows"]] == [
      ("logistic", "original"), ("logistic", "shuffled"), ("mlp", "original"), ("mlp", "shuffled")]
  assert all(len(r["final"]) == 2 for r in report["rows"])
  md = open(out + ".md").read()
  assert "| mlp | shuffled |" in md and "8 runs" in md
  second = subprocess.run(args, cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
  assert second.returncode == 0
  again = json.load(open(out + ".json"))
  assert again["provenance"]["retrained"] == [] and again["rows"] == report["rows"]
  assert len(again["provenance"]["cached"]) == 4
