"""Bad input ends with one `error:` line, exit 1 and nothing written: a representative slice of
tools/reliability/bad_inputs.py through its runners, and the library checks behind them.

The cases run inside this process (tools/reliability/in_process.py: no JAX import per case);
one runs in a fresh process, for what only a process's start and exit can show."""

import argparse
import concurrent.futures
import os
import signal

import numpy as np
import pytest

from research import cli
from research.config import ConfigError, load_config
from research.data import BatchSchedule, DataError
from research.data.arrays import read_inputs
from research.outputs import OutputError, check_output_dir, check_output_file, writable
from tools.reliability import bad_inputs
from tools.reliability.bad_inputs import CASES, BadInput, make_trained_run, run_case
from tools.reliability.in_process import run_in_process

WITHOUT_RUN = (  # in this process
  "train: get_config raises",
  "train: optimizer rmsprop",
  "train: model.channels 0",
  "export_dataset: out is an existing file",
  "train_vs_infer: max batch 0",
  "bench_inference: read-only workdir",
)
WITH_RUN = (  # in this process
  "infer: checkpoint last",
  "infer: labels do not match the inputs",
  "bench_inference: out is an existing file",
  "export: out is a directory",
)
# In a fresh process: JAX and Orbax have started (it opens the run's checkpoints) when the error
# comes, so this shows that no output at start or exit (a background thread's traceback at
# interpreter shutdown) adds to the one line, which a case run inside this process cannot show.
FRESH_PROCESS = ("infer: checkpoint at a step that was never saved",)


def _cases(names):
  by_name = {c.name: c for c in CASES}
  return [by_name[n] for n in names]


def _process_state():
  return (
    os.getcwd(),
    dict(os.environ),
    os.sched_getaffinity(0),
    [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)],
  )


def test_representative_cases_end_with_one_error_line_and_no_trace(tmp_path):
  root = str(tmp_path)
  before = _process_state()
  run = make_trained_run(root, runner=run_in_process)  # the shared run, trained here too
  # The fresh process runs on the other core while the cases run here.
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    fresh = pool.map(lambda c: run_case(c, root, run), _cases(FRESH_PROCESS))
    results = [run_case(c, root, None, runner=run_in_process) for c in _cases(WITHOUT_RUN)]
    results += [run_case(c, root, run, runner=run_in_process) for c in _cases(WITH_RUN)]
    results += list(fresh)
  assert _process_state() == before  # train.py's --threads 1 and signal handlers put back
  failed = [f"{r.name}: {r.why}" for r in results if not r.ok]
  assert not failed, "\n".join(failed)
  lines = {r.name: r.stderr_lines[0] for r in results}
  assert "AttributeError: no such field" in lines["train: get_config raises"]
  assert "--out DIR" in lines["bench_inference: read-only workdir"]
  assert "'last' is not latest, best or a step" in lines["infer: checkpoint last"]
  assert "12345" in lines[FRESH_PROCESS[0]]
  assert sorted(os.listdir(root)) == ["run"]  # every case's directory is gone


def test_the_judge_fails_a_success_that_writes(tmp_path):
  summary = '{"experiment": "x", "model": "m", "params": 1, "steps": 1}'
  case = BadInput(
    "compare_runs: a good table",
    ("scripts/compare_runs.py", "{tmp}/r", "--out", "{tmp}/table"),
    bad_inputs.files.text("r/summary.json", summary),
  )
  result = run_case(case, str(tmp_path), None, runner=run_in_process)
  assert not result.ok and result.exit_code == 0
  assert any(c.startswith("created: ") and c.endswith("table.md") for c in result.changed)
  assert "exit status 0" in result.why


def test_in_process_the_runner_sees_what_a_fresh_process_shows(tmp_path):
  script = tmp_path / "s.py"
  script.write_text(
    "import logging, os, sys, warnings\n"
    "os.environ['LEFT_BEHIND'] = '1'\n"
    "os.chdir('/')\n"
    "print('to stdout')\n"
    "os.write(2, b'from C\\n')\n"
    "warnings.warn('a warning')\n"
    "logging.getLogger('x').warning('a log record')\n"
    "if sys.argv[1] == 'raise':\n"
    "  raise ValueError('boom')\n"
    "sys.exit(int(sys.argv[1]))\n"
  )
  before = _process_state()
  for arg, code in (("3", 3), ("raise", 1)):
    for runner in (bad_inputs.run_subprocess, run_in_process):
      got, stderr = runner([str(script), arg], 60)
      lines = stderr.splitlines()
      assert got == code, (runner, stderr)
      assert "from C" in lines and "a log record" in lines and "to stdout" not in lines
      assert any(line.endswith("UserWarning: a warning") for line in lines), (runner, lines)
      assert lines[-1] == "ValueError: boom" if arg == "raise" else "boom" not in stderr
  assert _process_state() == before


def test_the_catalog_covers_every_script_and_writes_only_under_tmp():
  names = [c.name for c in CASES]
  assert len(names) >= 95 and len(set(names)) == len(names)
  scripts = {c.argv[0] for c in CASES}
  expected = {
    f"scripts/{f}"
    for f in os.listdir(os.path.join(bad_inputs.REPO, "scripts"))
    if f.endswith(".py") and f not in ("screenshot_dashboard.py", "fault_campaign.py")
  }
  assert expected <= scripts, expected - scripts
  for case in CASES:
    flags = dict(zip(case.argv[1::2], case.argv[2::2]))
    for flag in ("--out", "--output", "--workdir"):
      if flag in flags:
        assert flags[flag].startswith(("{tmp}", "{run}")), (case.name, flag)
    needs_run = any("{run}" in a for a in case.argv) or bool(case.copy_run)
    assert case.needs_run == needs_run, case.name


# --- The library checks behind the cases ---------------------------------------------------------


def test_argument_errors_are_one_line_and_exit_1(capsys):
  p = cli.ArgumentParser(prog="x.py")
  p.add_argument("--n", type=cli.positive_int)
  p.add_argument("--checkpoint", type=cli.checkpoint_arg)
  assert p.parse_args(["--n", "3", "--checkpoint", "200"]).checkpoint == 200
  for argv in (["--n", "0"], ["--n", "x"], ["--checkpoint", "last"], ["--bogus"]):
    with pytest.raises(SystemExit) as exit_:
      p.parse_args(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and len(err) == 1 and err[0].startswith("error: "), err
  plain = argparse.ArgumentParser(prog="train.py")  # scripts/train.py's, through the overrides
  with pytest.raises(SystemExit):
    cli.parse_with_overrides(plain, ["--config.batch_size"])
  assert capsys.readouterr().err.startswith("error: --config.batch_size needs a value")


def test_config_errors_name_the_file_and_the_field(tmp_path):
  cfg = tmp_path / "cfg.py"
  cfg.write_text("def get_config(variant=''):\n  raise LookupError('gone')\n")
  with pytest.raises(ConfigError, match=r"get_config\(\) raised LookupError: gone"):
    load_config(str(cfg))
  cnn, lm = "experiments/mnist1d_cnn.py", "experiments/lm_markov_tiny.py"
  for spec, override, match in (
    (cnn, "model.channels=0", "model.channels is a size"),
    (cnn, "data.seed=-1", r"data.seed must be an integer in \[0, 2\*\*32\)"),
    (lm, "model.n_head=0", "model.n_head is a size"),
    (lm, "model.d_model=65", "multiple of n_head"),
  ):
    with pytest.raises(ConfigError, match=match):
      load_config(spec, [override])


def test_batch_larger_than_the_data_is_a_data_error():
  with pytest.raises(DataError, match="exceeds the 100 training examples"):
    BatchSchedule(100, 1000)


def test_cnn1d_refuses_inputs_of_another_rank():
  import jax
  import jax.numpy as jnp

  from research.models import ModelError, build_model

  model = build_model({"name": "cnn1d"}, 10)
  with pytest.raises(ModelError, match=r"takes \[N, L\] sequences.*\[N, 40, 2\]"):
    model.init(jax.random.key(0), jnp.zeros((1, 40, 2)))


def test_input_files_are_checked_before_any_run_is_read(tmp_path):
  fake = tmp_path / "x.npz"
  fake.write_text("1,2,3\n")
  with pytest.raises(DataError, match="not a zip archive of arrays.*export_dataset.py"):
    read_inputs(str(fake))
  np.savez(tmp_path / "l.npz", x=np.zeros((8, 40)), y=np.zeros(5, int))
  with pytest.raises(DataError, match=r"labels .* have shape \[5\] but the inputs hold 8"):
    read_inputs(str(tmp_path / "l.npz"))


def test_output_paths(tmp_path):
  (tmp_path / "f").write_text("x")
  with pytest.raises(OutputError, match="is a directory"):
    check_output_file(str(tmp_path), "--output", (".npy",))
  with pytest.raises(OutputError, match="unknown type; use one of .npy"):
    check_output_file(str(tmp_path / "p.txt"), "--output", (".npy",))
  with pytest.raises(OutputError, match="is a file, not a directory"):
    check_output_file(str(tmp_path / "f" / "p.npy"), "--output")
  with pytest.raises(OutputError, match="is a file; this command writes a directory"):
    check_output_dir(str(tmp_path / "f"), "--out")
  check_output_dir(str(tmp_path / "new" / "deeper"), "--out")  # made when written
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o555)
  try:
    assert not writable(str(ro))  # for root too: no write bit is read-only on purpose
    with pytest.raises(OutputError, match="read-only"):
      check_output_dir(str(ro), "--out")
  finally:
    ro.chmod(0o755)
