"""The fault campaign: its judge on made-up outcomes (fast), its planning, dispatch and report for
every kind, and a few real trials of each signal and damage kind against scripts/train.py (about
a minute each; the full campaign is `python scripts/fault_campaign.py`). Bad inputs and the
two-process run have their own tests; the concurrent, storage and sweep_signals trials run only
in the campaign (each starts several training processes)."""

import json
import os
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from research.provenance import git_commit
from tools.reliability import campaign, damage, report, storage_failures, sweep_runs
from tools.reliability.harness import Outcome, TrialResult, compare, event_problems
from tools.reliability.judge import BadInput, run_case
from tools.reliability.trials import Context, Scenario

STEPS = 4


def outcome(**change):
  losses = {s: [float(s)] for s in range(1, STEPS + 1)}
  fields = {
    "summary": {"steps": STEPS, "final_test_loss": 0.5, "final_test_accuracy": 0.9},
    "step": STEPS,
    "params": {"['w']": ("float32", (2,), np.float32([1, 2]).tobytes())},
    "losses": losses,
  }
  fields.update(change)
  return Outcome(**fields)


def test_compare_passes_only_a_bitwise_equal_end():
  ref = outcome()
  assert compare(ref, outcome(), STEPS) == []
  one_ulp = np.nextafter(np.float32(2), np.float32(3))
  cases = {
    "final_test_loss": outcome(summary={**ref.summary, "final_test_loss": 0.50001}),
    "no summary.json": outcome(summary=None),
    "final params differ": outcome(
      params={"['w']": ("float32", (2,), np.float32([1, one_ulp]).tobytes())}
    ),
    "final checkpoint step": outcome(step=STEPS - 1),
    "twice": outcome(losses={**ref.losses, 2: [2.0, 2.0]}),
    "lacks": outcome(losses={s: v for s, v in ref.losses.items() if s != 3}),
    "train/loss differs": outcome(losses={**ref.losses, 4: [4.5]}),
    "unreadable": outcome(error="final checkpoint unreadable (CheckpointError: ...)"),
  }
  for expected, got in cases.items():
    why = compare(ref, got, STEPS)
    assert len(why) == 1 and expected in why[0], (expected, why)


def test_event_problems_name_the_first_bad_step():
  assert event_problems({1: [0.1], 2: [0.2, 0.2], 4: [0.4], 9: [0.9]}, 4) == [
    "TensorBoard shows 1 train/loss steps twice (first 2)",
    "TensorBoard lacks 1 train/loss steps (first 3)",
    "TensorBoard has train/loss beyond the run's steps (step 9)",
  ]


def test_damage_kinds_change_bytes_and_moved_steps_must_be_intact(tmp_path):
  step = tmp_path / "run" / "checkpoints" / "300"
  for rel, data in {
    "_CHECKPOINT_METADATA": b"{}",
    "params/_METADATA": b"{}",
    "params/d/big": b"x" * 100,
    "opt_state/_METADATA": b"{}",
    "meta/metadata": b"{}",
  }.items():
    (step / rel).parent.mkdir(parents=True, exist_ok=True)
    (step / rel).write_bytes(data)
  rng = np.random.default_rng(0)
  kinds = {d.name: d for d in damage.DAMAGES}
  before = damage.tree_hash(str(step))
  kinds["truncated_params"].apply(str(step), rng)
  after = damage.tree_hash(str(step))
  assert (step / "params/d/big").stat().st_size == 50 and after != before
  kinds["half_deleted_older"].apply(str(step), rng)
  assert 0 < len(damage._files(str(step))) < 5
  assert kinds["two_newest_damaged"].targets([100, 200, 300]) == [200, 300]
  # Moved intact: found under checkpoints_damaged with a suffix; a changed byte is caught.
  hashes = {300: damage.tree_hash(str(step))}
  moved = tmp_path / "run" / "checkpoints_damaged" / "300.1"
  moved.parent.mkdir()
  os.rename(step, moved)
  assert damage._moved_intact(str(tmp_path / "run"), hashes) == []
  next(p for p in moved.rglob("*") if p.is_file()).write_bytes(b"changed")
  assert "changed (300.1)" in damage._moved_intact(str(tmp_path / "run"), hashes)[0]
  assert damage.names("moved step 300; resuming from 1200", 300)
  assert not damage.names("resuming from 1300", 300)


def test_report_counts_kinds_against_the_done_when(tmp_path, repo_root, monkeypatch):
  results = [TrialResult("kill9", i, True, 10.0, details={"kills": []}) for i in range(20)]
  results += [
    TrialResult("sigterm", 0, True, 12.0, details={"exit_seconds": 0.3, "landed": "mid_save"}),
    TrialResult("sigterm", 1, False, 12.0, ["exit status -15 after SIGTERM, expected 143"]),
  ]
  # --quick: 2 Ctrl-C trials, both passed, of the 20 the done-when asks: too few, not a failure.
  results += [TrialResult("sigint", i, True, 9.0, details={"exit_seconds": 0.2}) for i in range(2)]
  rows = {r["kind"]: r for r in report.summary_rows(results)}
  assert rows["kill9"]["met"] and (rows["kill9"]["passed"], rows["kill9"]["total"]) == (20, 20)
  assert not rows["sigterm"]["met"] and "max 0.30 s" in rows["sigterm"]["notes"]
  assert [rows[k]["verdict"] for k in ("kill9", "sigterm", "sigint")] == ["yes", "no", "too few"]
  out = str(tmp_path / "reports" / "reliability.md")
  meta = {"markdown": "- command: `x`"}
  text = report.render(results, {"wall_seconds": 60}, meta)
  assert "| kill9 | 20/20 | ≥20 | yes |" in text
  assert "| sigterm | 1/2 | ≥20 | **no** |" in text
  assert "| sigint | 2/2 | ≥20 | too few |" in text
  console = report.console_table(results).splitlines()[1:]
  assert [line.split()[:3] for line in console] == [
    ["kill9", "20/20", "yes"],
    ["sigterm", "1/2", "no"],
    ["sigint", "2/2", "too"],
  ]
  assert " too few " in console[2]
  assert "- sigterm 2: exit status -15 after SIGTERM, expected 143" in text
  monkeypatch.chdir(repo_root)  # as the scripts run: the commit is the working directory's
  md, js = report.write_report(out, results, {"wall_seconds": 60}, ["scripts/fault_campaign.py"])
  assert os.path.isfile(md) and js.endswith("reliability.json") and os.path.isfile(js)
  with open(js) as f:
    assert json.load(f)["meta"]["commit"] == git_commit(repo_root)
  assert git_commit(str(tmp_path)) == "unknown"  # outside a checkout


def test_bad_inputs_and_two_process_results_become_trials(tmp_path):
  def run_case(case, tmp_root, run, timeout=120):
    if case.name == "boom":
      raise RuntimeError("harness bug")
    ok = case.name == "good"
    return types.SimpleNamespace(
      name=case.name,
      ok=ok,
      exit_code=1,
      stderr_lines=["error: x"],
      changed=[] if ok else ["created: y"],
      seconds=0.1,
      why="" if ok else "created y",
    )

  fake = types.SimpleNamespace(
    CASES=[types.SimpleNamespace(name=n, needs_run=False) for n in ("good", "bad", "boom")],
    make_trained_run=lambda directory: directory,
    run_case=run_case,
  )
  lines = []
  rs = campaign.run_bad_inputs(str(tmp_path), None, 2, lines.append, module=fake)
  assert [(r.ok, r.why[:1]) for r in rs] == [
    (True, []),
    (False, ["created y"]),
    (False, ["harness error: RuntimeError: harness bug"]),
  ]
  assert len(lines) == 3 and all(line.startswith("bad_inputs") for line in lines)
  two = types.SimpleNamespace(run_two_process_trial=lambda tmp: {"ok": False, "why": "mismatch"})
  r = campaign.run_two_process(str(tmp_path), lines.append, module=two)
  assert (r.kind, r.ok, r.why) == ("two_process", False, ["mismatch"])


def test_script_refuses_unknown_kinds_and_a_non_markdown_out(repo_root, tmp_path):
  script = os.path.join(repo_root, "scripts", "fault_campaign.py")
  env = {**os.environ, "PYTHONPATH": repo_root}
  run = lambda *a: subprocess.run(
    [sys.executable, script, *a], capture_output=True, text=True, env=env, cwd=repo_root
  )
  bad_kind = run("--kinds", "kill9,oops")
  assert bad_kind.returncode == 2 and "choose from kill9" in bad_kind.stderr
  assert "concurrent, storage, sweep_signals" in bad_kind.stderr
  bad_out = run("--out", str(tmp_path / "report.txt"))
  assert bad_out.returncode == 1
  assert bad_out.stderr.strip().splitlines() == [bad_out.stderr.strip()]
  assert bad_out.stderr.startswith("error: --out") and not os.listdir(tmp_path)


def test_plan_lists_each_scenario_kind_once_and_quick_a_few():
  full = campaign.plan(["concurrent", "storage", "sweep_signals"], 20, quick=False)
  names = {k: [what.name for kind, _, what in full if kind == k] for k in campaign.SCENARIO_MODULES}
  assert names == {
    "concurrent": ["two_trains", "two_sweeps", "failed_start_others", "stale_lock"],
    "storage": ["readonly_checkpoints", "disk_full", "checkpoints_is_file"],
    "sweep_signals": ["sigterm", "sigint", "sighup", "ctrl_c", "kill9_worker", "kill9_parent"],
  }
  assert [i for kind, i, _ in full if kind == "storage"] == [0, 1, 2]
  quick = campaign.plan(["storage", "sweep_signals", "kill9"], 2, quick=True)
  assert [(k, w.name) for k, _, w in quick if k != "kill9"] == [
    ("storage", "readonly_checkpoints"),
    ("storage", "checkpoints_is_file"),
    ("sweep_signals", "sigterm"),
    ("sweep_signals", "kill9_parent"),
  ]
  # Only the trials that start scripts/sweep.py need the sweep reference.
  assert {w.name for _, _, w in full if w.sweep} == {"two_sweeps", *names["sweep_signals"]}
  assert campaign.plan(["kill9"], 1, quick=False) == [("kill9", 0, None)]


def test_scenarios_are_dispatched_and_a_harness_error_fails_only_its_trial(tmp_path):
  seen = []

  def good(ctx, index):
    seen.append((ctx.reference_dir, ctx.sweep, os.path.basename(ctx.directory)))
    return TrialResult("storage", index, True, 0.1, details={"name": "good"})

  def boom(ctx, index):
    raise OSError("mount table full")

  jobs = [("storage", 0, Scenario("good", good)), ("storage", 1, Scenario("boom", boom))]
  prepared = {"setup": None, "reference": None, "timeline": None, "reference_dir": "R"}
  prepared["sweep"] = "S"
  lines = []
  rs = campaign.run_trials(prepared, jobs, str(tmp_path), seed=0, workers=1, progress=lines.append)
  assert seen == [("R", "S", "storage_00")]
  assert [(r.ok, r.why) for r in rs] == [
    (True, []),
    (False, ["harness error: OSError: mount table full"]),
  ]
  assert rs[1].details == {"name": "boom"} and "FAIL" in lines[1] and "boom" in lines[1]


def test_a_storage_trial_without_root_is_skipped_not_passed(tmp_path, monkeypatch):
  monkeypatch.setattr(storage_failures, "mount_problem", lambda scratch: "mounting needs root: no")
  ctx = Context(None, None, None, str(tmp_path), np.random.default_rng(0), None)
  for trial in (storage_failures.readonly_checkpoints_trial, storage_failures.disk_full_trial):
    r = trial(ctx, 0)
    assert (r.ok, r.failed, r.skipped) == (False, False, "mounting needs root: no")
  assert os.listdir(tmp_path) == []  # nothing was started or mounted
  line = campaign.progress_line(r, 3)
  assert " skip " in line and line.endswith("(mounting needs root: no)")


def test_report_counts_skipped_and_names_each_scenario(tmp_path):
  results = [
    TrialResult(
      "storage", 0, False, 0.0, details={"name": "readonly_checkpoints"}, skipped="no root"
    ),
    TrialResult(
      "storage", 1, True, 3.0, details={"name": "checkpoints_is_file", "exit_seconds": 2.5}
    ),
    TrialResult(
      "sweep_signals",
      0,
      False,
      9.0,
      ["exit status -15 after SIGTERM, expected 143"],
      {"name": "sigterm", "exit_seconds": 0.02},
    ),  # fmt: skip
    TrialResult("concurrent", 0, True, 5.0, details={"name": "stale_lock"}),
  ]
  rows = {r["kind"]: r for r in report.summary_rows(results)}
  assert [rows[k]["verdict"] for k in ("storage", "sweep_signals", "concurrent")] == [
    "skipped",
    "no",
    "too few",
  ]
  assert rows["storage"]["median_seconds"] == 3.0  # the trial that ran
  assert rows["storage"]["notes"] == (
    "readonly_checkpoints skipped, checkpoints_is_file pass (exit 2.50 s); skipped: no root"
  )
  assert [r["kind"] for r in report.summary_rows(results)] == [
    "concurrent",
    "storage",
    "sweep_signals",
  ]
  info = {"wall_seconds": 60, "sweep_reference": {"seconds": 11.0}}
  text = report.render(results, info, {"markdown": "- command: `x`"})
  assert "| storage | 1/2 (1 skipped) | ≥3 | skipped |" in text
  assert "| sweep_signals | 0/1 | ≥6 | **no** |" in text
  assert "- sweep_signals 1 (sigterm): exit status -15 after SIGTERM, expected 143" in text
  assert "## Skipped\n\n- storage 1 (readonly_checkpoints): no root" in text
  assert "storage 1 (readonly" not in text.split("## Failures")[1].split("## Skipped")[0]
  assert "(11.0 s each)" in text
  assert [r.failed for r in results] == [False, False, True, False]


def test_bad_input_cases_can_set_the_environment_copy_the_run_and_expect_a_name(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text("{}")
  calls = []

  def runner(argv, timeout, env=None):
    calls.append((argv, env, sorted(os.listdir(argv[-1]))))
    return 1, "error: optimizer.b1 must be in [0, 1)\n"

  case = BadInput("train: b1", ("scripts/train.py", "{tmp}/r"), None, True, (("X64", "1"),), "r")
  result = run_case(case, str(tmp_path), str(run), runner=runner)
  assert result.ok and calls[0][1] == {"X64": "1"} and calls[0][2] == ["config.json"]
  assert calls[0][0][-1].endswith("/r") and calls[0][0][-1] != str(run)
  wrong = BadInput("train: b2", ("scripts/train.py", "{tmp}/r"), None, True, (), "r", "b2")
  result = run_case(wrong, str(tmp_path), str(run), runner=runner)
  assert not result.ok and "does not name 'b2'" in result.why
  assert sorted(os.listdir(tmp_path)) == ["run"]  # each case's directory, the copy with it, gone


def test_sweep_processes_are_found_by_group_and_killed_with_it():
  lines = ["sweep:   0%|          | 0/1 [00:00<?, ?job/s]", "error: workdir W is in use by PID 7"]
  assert sweep_runs.message_lines(lines) == lines[1:]
  child = subprocess.Popen(["sleep", "30"], start_new_session=True)
  try:
    assert sweep_runs.alive(child.pid) == [child.pid]
    assert child.pid not in sweep_runs.workers(os.getpid())  # a child, not a spawned worker
    t = time.monotonic()
    assert sweep_runs.wait_gone(child.pid, t + 0.2) == [child.pid]
    sweep_runs.kill_group(child.pid)
    assert sweep_runs.alive(child.pid) == []  # killed (a zombie until reaped: not alive)
    assert child.poll() == -signal.SIGKILL
  finally:
    child.kill()
    child.wait()


# --- Real trials: a few of each, against scripts/train.py ------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """The dataset file, the warmed compilation cache and the reference run, once per worker."""
  root = str(tmp_path_factory.mktemp("fault_campaign"))
  return root, campaign.prepare(root, progress=lambda line: None)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["kill9", "damaged"])
def test_quick_trials_pass(kind, prepared):
  """One kill -9 trial and one kind of damage through the campaign's own harness: the suite
  stays short. SIGTERM has its real-signal tests elsewhere (a sweep stopped and resumed bitwise
  in test_sweep.py, SIGHUP in test_signals.py, commands that train nothing in test_storage.py),
  SIGINT in test_signals.py and test_storage.py; `scripts/fault_campaign.py` runs 20 of each
  signal kind, SIGTERM at startup included, and every damage."""
  root, ready = prepared
  jobs = campaign.plan([kind], 1, quick=True)
  jobs = jobs[:1] if kind == "damaged" else jobs  # the newest step truncated: resume from older
  results = campaign.run_trials(ready, jobs, root, seed=1, workers=1, progress=print)
  failed = [f"{r.kind} {r.index}: {r.why} {r.details}" for r in results if not r.ok]
  assert len(results) == len(jobs) >= 1 and not failed, f"logs in {root}\n" + "\n".join(failed)
