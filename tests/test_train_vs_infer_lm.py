"""The main job on a language model: trained, measured in tokens, served within the bounds, and
the break-even in tokens; a classifier given LM flags is refused before any work."""

import json
import os

import pytest

TINY = (
  *("--config", "experiments/lm_markov_tiny.py:tiny", "--config.num_steps=10"),
  *("--config.num_devices=1", "--slots", "4", "--requests", "64", "--decode-batches", "4"),
)


def test_the_main_job_reports_a_language_model_in_tokens(script_here, tmp_path):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  workdir, out = tmp_path / "lm", tmp_path / "out"
  args = ("--threads", "0", "--no-progress", "--workdir", workdir, "--out", out, *TINY)
  code, stdout, stderr = script_here("train_vs_infer.py", *args)
  assert code == 0, stderr[-3000:]
  r = json.loads((out / "report.json").read_text())
  assert r == json.loads((workdir / "report.json").read_text())  # the workdir keeps a copy
  assert r["kind"] == "language_model" and r["steps"] == 10 and r["step"] == 10
  assert r["loss"]["entropy_rate"] > 0 and r["flops"]["decode_per_token"] > 0
  g, t, s, be = r["generation"], r["training"], r["serving"], r["break_even_tokens"]
  assert g["settings"]["decode"] == "engine"  # batched decode on the serving engine
  assert [b["batch_size"] for b in g["batched"]] == [4] and g["best_batched"] == g["batched"][0]
  assert s["engine"]["slots"] == 4 and s["compilations_after_warmup"] == 0
  assert s["bounds"]["ttft_ms"] > s["unloaded"]["ttft_ms"]["p50"]
  assert s["trials"] and s["valid"] == any(t["valid"] for t in s["trials"])
  md = (out / "report.md").read_text()
  if s["valid"]:  # (a machine busy enough can miss even the least load tried)
    assert s["ttft_p99_ms"] <= s["bounds"]["ttft_ms"]
    assert s["tpot_p99_ms"] <= s["bounds"]["tpot_ms"]
    assert s["server_qps"] == max(t["target_qps"] for t in s["trials"] if t["valid"])
    mean_out = s["workload"]["output_tokens"]["mean"]
    assert s["tokens_per_s"] == pytest.approx(s["server_qps"] * mean_out)
    assert s["seconds_per_token"] == pytest.approx(1 / s["tokens_per_s"])
    assert f"{be['seconds_within_bounds']:,.0f} served within the bounds" in stdout
  else:
    assert s["tokens_per_s"] is None and be["seconds_within_bounds"] is None
    assert "No load tried" in md and "- served within the bounds" in stdout
  # Each break-even is its formula, from the report's own numbers.
  assert be["flops"] == pytest.approx(t["total_flops"] / r["flops"]["decode_per_token"])
  assert be["seconds_realtime"] == pytest.approx(
    t["train_seconds"] / (g["realtime"]["tpot"]["p50_ms"] / 1e3)
  )
  assert be["seconds_batched"] == pytest.approx(
    t["train_seconds"] * g["best_batched"]["tokens_per_second"]
  )
  if s["valid"]:
    assert be["seconds_within_bounds"] == pytest.approx(t["train_seconds"] * s["tokens_per_s"])
  for heading in ("## Loss", "## FLOPs per token", "## Served within the bounds",
                  "## Break-even in tokens served"):  # fmt: skip
    assert heading in md
  assert f"| {be['flops']:,.0f} |" in md
  for f in ("report.png", "report.svg", "report.pdf"):
    assert (out / f).is_file() and (workdir / f).is_file()
  trial = EventAccumulator(str(workdir / "summary"), size_guidance={"scalars": 0})
  trial.Reload()
  metrics = {tag: trial.Scalars(tag)[-1].value for tag in trial.Tags()["scalars"]}
  tags = {"flops": "flops", "seconds_realtime": "realtime", "seconds_batched": "batched",
          "seconds_within_bounds": "within_bounds"}  # fmt: skip
  for key, tag in tags.items():
    if be[key] is None:  # (no load met the bounds)
      assert f"trial/break_even_tokens_{tag}" not in metrics
    else:
      assert metrics[f"trial/break_even_tokens_{tag}"] == pytest.approx(be[key], rel=1e-6)
  if s["valid"]:
    assert metrics["trial/tokens_per_s_within_bounds"] == pytest.approx(s["tokens_per_s"], rel=1e-6)
  assert "report" in trial.Tags()["tensors"] and "trial/report" in trial.Tags()["images"]
  assert not [d for d in os.listdir(workdir) if "loadgen" in d]  # LoadGen's logs stay out


@pytest.mark.parametrize(
  "flags, words",
  [
    (("--slots", "4"), ("--slots", "language model", "classifier")),
    (("--decode-batches", "1,0"), ("--decode-batches", ">= 1")),
  ],
)
def test_lm_flags_are_refused_before_any_work(script_here, tmp_path, flags, words):
  args = ("--threads", "0", "--no-progress", "--workdir", tmp_path / "w", "--out", tmp_path / "o")
  code, _, stderr = script_here("train_vs_infer.py", *args, *flags)
  lines = stderr.strip().splitlines()
  assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), stderr
  assert all(w in lines[0] for w in words), lines[0]
  assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()
