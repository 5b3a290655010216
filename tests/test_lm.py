"""The language model end to end: training against the source's entropy rate, 8 devices against
1, checkpoint restore for inference, and the cost report."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from research.config import load_config
from research.data.markov import entropy_rate, make_markov_source
from research.serving.generate import make_generator
from research.serving.restore import load_run
from research.training.loop import train_and_evaluate


def tiny(num_devices=1, steps=40):
  """The tiny variant: one layer of width 32 on 32-token windows, 40 steps at rate 1e-2."""
  return load_config(
    "experiments/lm_markov_tiny.py:tiny", [f"num_steps={steps}", f"num_devices={num_devices}"]
  )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("lm") / "run")
  return workdir, train_and_evaluate(tiny(), workdir, progress=False)


@pytest.mark.slow
def test_lm_reports_its_loss_against_the_sources_entropy_rate(trained):
  _, s = trained
  rate = entropy_rate(make_markov_source(vocab_size=32, branching=4, seed=0))
  assert s["loss_floor"] == pytest.approx(rate)
  assert s["gap_to_floor"] == pytest.approx(s["final_test_loss"] - rate)
  assert s["bits_per_token"] == pytest.approx(s["final_test_loss"] / math.log(2))
  assert s["perplexity"] == pytest.approx(math.exp(s["final_test_loss"]))
  # 40 steps learn much of the chain: well below a uniform guess, and never below the floor
  # by more than the small-sample noise of a 4096-token test set.
  assert rate - 0.05 < s["final_test_loss"] < math.log(32) - 0.5
  assert 0 < s["final_test_accuracy"] < 1


@pytest.mark.slow
def test_lm_on_eight_devices_matches_one(tmp_path):
  one = train_and_evaluate(tiny(1, steps=20), str(tmp_path / "one"), progress=False)
  eight = train_and_evaluate(tiny(8, steps=20), str(tmp_path / "eight"), progress=False)
  assert eight["devices"] == 8
  assert eight["final_test_loss"] == pytest.approx(one["final_test_loss"], rel=1e-5)


def test_trained_lm_restores_params_alone_and_generates(trained):
  workdir, _ = trained
  run = load_run(workdir)
  assert run.input_shape == (32,) and run.num_classes == 32
  prompt = np.zeros((2, 4), np.int32)
  tokens = make_generator(run.model).generate(run.params, prompt, 8)
  assert tokens.shape == (2, 8) and int(tokens.min()) >= 0 and int(tokens.max()) < 32


@pytest.mark.slow
def test_lm_costs_script(trained, repo_root, tmp_path):
  workdir, summary = trained
  out = str(tmp_path / "report")
  result = subprocess.run(
    [
      sys.executable,
      "scripts/lm_costs.py",
      "--workdir",
      workdir,
      "--out",
      out,
      "--prompt-tokens",
      "4",
      "--new-tokens",
      "8",
      "--sequences",
      "3",
      "--batch-sizes",
      "1,4",
    ],
    cwd=repo_root,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  r = json.load(open(os.path.join(out, "report.json")))
  f = r["flops"]
  assert abs(f["xla_over_exact"]["forward"] - 1) < 0.1
  assert abs(f["xla_over_exact"]["train_step"] - 1) < 0.1
  assert f["train_step_per_token"]["kaplan"] == pytest.approx(3 * f["forward_per_token"]["kaplan"])
  assert r["loss"]["gap_to_entropy_rate"] == pytest.approx(summary["gap_to_floor"])
  rt = r["generation"]["realtime"]
  assert 0 < rt["tpot"]["p50_ms"] <= rt["tpot"]["p99_ms"] and rt["tpot"]["n"] == 3 * 7
  assert [b["batch_size"] for b in r["generation"]["batched"]] == [1, 4]
  be, t = r["break_even_tokens"], r["training"]
  assert be["flops"] == pytest.approx(t["total_flops"] / f["decode_per_token"])
  assert be["seconds_realtime"] == pytest.approx(t["train_seconds"] / (rt["tpot"]["p50_ms"] / 1e3))
  md = open(os.path.join(out, "report.md")).read()
  for heading in ("## Loss", "## FLOPs per token", "## Time", "## Break-even"):
    assert heading in md


def test_lm_costs_without_a_run_is_one_line(script_here, tmp_path):
  code, _, stderr = script_here("lm_costs.py", "--threads", "0", "--workdir", tmp_path / "none")
  assert code == 1 and stderr.count("error:") == 1
  assert "no trained run" in stderr


def test_lm_costs_asking_past_the_context_is_one_line(trained, script_here, tmp_path):
  workdir, _ = trained
  args = ["--workdir", workdir, "--out", tmp_path / "r", "--prompt-tokens", "8", "--new-tokens"]
  code, _, stderr = script_here("lm_costs.py", "--threads", "0", *args, "40")
  assert code == 1 and stderr.count("error:") == 1
  assert "exceed the model's n_ctx 32" in stderr
  assert not os.path.exists(tmp_path / "r")
