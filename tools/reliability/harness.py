"""Starting `scripts/train.py` as a user would, and reading back what a run ended with.

A trial launches the real script in its own session (a Ctrl-C in a terminal reaches the whole
process group, and so do the signals here), pinned to one core, its output in files beside the
workdir. What a run ended with is read the way a user would read it: summary.json, the final
checkpoint's params through `research.checkpoint`, and every step's `train/loss` through
TensorBoard's own `EventAccumulator` (which drops the events a restart orphaned). Two outcomes are
equal only bitwise: a resumed run must end exactly where an uninterrupted one ends.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Sequence

from tools import REPO

ORBAX_TMP = ".orbax-checkpoint-tmp"  # Orbax writes a step here, then renames it to <step>
RUN_TIMEOUT = 300  # seconds an uninterrupted (or resumed) trial run may take before it is a hang
POLL = 0.002  # seconds between looks at the workdir: Orbax saves here take about 0.1 s

_live: set[Launch] = set()  # every launch not yet reaped, so an aborted campaign leaves none
_live_lock = threading.Lock()
_aborted = threading.Event()  # set by `abort`: no trial starts another process
_jax_lock = threading.Lock()  # restores in the campaign process, one at a time


@dataclasses.dataclass(frozen=True)
class TrialSetup:
  """The one training command every trial repeats, and where its shared inputs live."""

  config: str  # experiments/<x>.py, relative to the repository
  overrides: tuple[str, ...]  # "key=value", passed as --config.key=value
  num_steps: int
  checkpoint_every: int
  cache: str = ""  # a warmed JAX compilation cache, copied into each trial
  infer_input: str = ""  # a few examples for scripts/infer.py (.npy)

  def command(self, workdir: str) -> list[str]:
    flags = [f"--config.{o}" for o in self.overrides]
    script = os.path.join(REPO, "scripts", "train.py")
    command = [sys.executable, script, "--config", self.config, "--workdir", workdir]
    return command + ["--no-progress", *flags]

  def env(self, cache: str = "") -> dict[str, str]:
    """The caller's environment, with this checkout importable and the compilation cache set."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    if cache:
      env["JAX_COMPILATION_CACHE_DIR"] = cache
      env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
      env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


@dataclasses.dataclass
class TrialResult:
  """One trial's verdict: `why` lists every failed check (empty when it passed); `skipped` says
  why a trial could not run on this machine (then `ok` is False, and it is no failure either)."""

  kind: str
  index: int
  ok: bool
  seconds: float
  why: list[str] = dataclasses.field(default_factory=list)
  details: dict[str, Any] = dataclasses.field(default_factory=dict)
  skipped: str = ""

  @property
  def failed(self) -> bool:
    return not self.ok and not self.skipped

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


class Launch:
  """One start of a command in its own session, pinned to `core`, output in `<log>.stdout/err`."""

  def __init__(self, command: Sequence[str], env: dict[str, str], log: str, core: int | None):
    if _aborted.is_set():
      raise RuntimeError("the campaign was aborted")
    if core is not None and shutil.which("taskset"):
      command = ["taskset", "-c", str(core), *command]  # exec's python: the pid stays the same
    self.log = log
    with open(log + ".stdout", "wb") as out, open(log + ".stderr", "wb") as err:
      self.proc = subprocess.Popen(
        list(command), cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True
      )
    self.started = time.monotonic()
    with _live_lock:
      _live.add(self)

  def poll(self) -> int | None:
    return self._reaped(self.proc.poll())

  def signal(self, sig: int) -> float:
    """Sends `sig` to the process group; returns when (time.monotonic)."""
    t = time.monotonic()
    try:
      os.killpg(self.proc.pid, sig)
    except ProcessLookupError:
      pass
    return t

  def wait(self, timeout: float) -> int | None:
    """The exit status, or None when still running after `timeout` seconds."""
    try:
      return self._reaped(self.proc.wait(timeout))
    except subprocess.TimeoutExpired:
      return None

  def kill(self) -> None:
    if self.proc.poll() is None:  # a reaped pid may already name another process group
      self.signal(signal.SIGKILL)
    self._reaped(self.proc.wait())

  def stderr_lines(self) -> list[str]:
    """Non-empty stderr lines; undecodable bytes shown as escapes (and judged unreadable)."""
    with open(self.log + ".stderr", "rb") as f:
      text = f.read().decode("utf-8", errors="backslashreplace")
    return [line for line in text.splitlines() if line.strip()]

  def _reaped(self, rc: int | None) -> int | None:
    if rc is not None:
      with _live_lock:
        _live.discard(self)
    return rc


def kill_all(under: str = "") -> None:
  """Kills every launch still running whose logs are under `under` (default: all): what a trial
  that raised, or an aborted campaign, left behind."""
  with _live_lock:
    live = [launch for launch in _live if launch.log.startswith(under)]
  for launch in live:
    launch.kill()


def abort() -> None:
  """Stops the campaign: every running launch killed, no new one started."""
  _aborted.set()
  kill_all()


def run_to_end(command: Sequence[str], env: dict[str, str], log: str, core: int | None):
  """Runs a command to its end; (exit status or None on a hang, its stderr lines, seconds)."""
  launch = Launch(command, env, log, core)
  rc = launch.wait(RUN_TIMEOUT)
  if rc is None:
    launch.kill()
  return rc, launch.stderr_lines(), time.monotonic() - launch.started


def checkpoint_entries(workdir: str) -> list[str]:
  try:
    return os.listdir(os.path.join(workdir, "checkpoints"))
  except OSError:
    return []


def steps_on_disk(workdir: str) -> list[int]:
  """Finished checkpoint steps, read from directory names as a user listing them would."""
  return sorted(int(n) for n in checkpoint_entries(workdir) if n.isdigit())


def saving(workdir: str) -> list[str]:
  """The Orbax temporary directories of saves in progress."""
  return [n for n in checkpoint_entries(workdir) if ORBAX_TMP in n]


def wait_until(launch: Launch, ready: Callable[[], bool], timeout: float) -> bool:
  """Polls `ready` until it holds (True), or the process exits or time runs out (False)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if ready():
      return True
    if launch.poll() is not None:
      return False
    time.sleep(POLL)
  return False


def copy_cache(setup: TrialSetup, directory: str) -> str:
  """The warmed compilation cache copied for one trial: a killed process that was writing an
  entry can damage only its own trial's copy."""
  if not setup.cache:
    return ""
  target = os.path.join(directory, "jax_cache")
  shutil.copytree(setup.cache, target, dirs_exist_ok=True)
  return target


# --- What a run ended with ----------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
  """The user-visible end of a run."""

  summary: dict[str, Any] | None
  step: int | None  # the newest restorable checkpoint
  params: dict[str, tuple[str, tuple[int, ...], bytes]]  # leaf path -> (dtype, shape, bytes)
  losses: dict[int, list[float]]  # train/loss per step, as TensorBoard reads it back
  error: str = ""  # why the checkpoint or events could not be read


def read_outcome(workdir: str) -> Outcome:
  summary = None
  try:
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
  except (OSError, json.JSONDecodeError):
    pass
  step, params, error = None, {}, ""
  try:
    step, params = _final_params(workdir)
  except Exception as e:  # a damaged or missing checkpoint is a finding, not a harness crash
    error = f"final checkpoint unreadable ({type(e).__name__}: {str(e)[:200]})"
  return Outcome(summary, step, params, train_losses(workdir), error)


def train_losses(workdir: str) -> dict[int, list[float]]:
  """Every `train/loss` value per step, read through TensorBoard's EventAccumulator with its
  default purge of orphaned data: a step seen twice is a step TensorBoard would show twice."""
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  logging.getLogger("tensorboard").setLevel(logging.ERROR)  # each purge is expected here
  acc = EventAccumulator(workdir, size_guidance={"scalars": 0})
  acc.Reload()
  out: dict[int, list[float]] = {}
  if "train/loss" in acc.Tags().get("scalars", []):
    for event in acc.Scalars("train/loss"):
      out.setdefault(int(event.step), []).append(float(event.value))
  return out


def _final_params(workdir: str) -> tuple[int | None, dict]:
  import jax
  import jax.numpy as jnp
  import ml_collections
  import numpy as np

  from research.checkpoint import Checkpointer
  from research.models import build_model

  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  with _jax_lock, Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True) as ckpt:
    step = ckpt.latest_step()
    if step is None:
      return None, {}
    spec = ckpt.restore_meta(step)["data_spec"]
    model = build_model(config.model, spec["num_classes"])
    x0 = jnp.zeros((1, *spec["input_shape"]), spec["input_dtype"])
    like = model.init(jax.random.key(0), x0)
    params = ckpt.restore_params(step, like)
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  out = {}
  for path, leaf in leaves:
    a = np.asarray(leaf)
    out[jax.tree_util.keystr(path)] = (str(a.dtype), a.shape, a.tobytes())
  return step, out


def compare(reference: Outcome, got: Outcome, num_steps: int) -> list[str]:
  """Every way `got` differs from the reference; empty when it ends bitwise where it ends."""
  why = []
  if got.summary is None:
    why.append("no summary.json after the final run")
  else:
    for key in ("steps", "final_test_loss", "final_test_accuracy"):
      a, b = reference.summary.get(key), got.summary.get(key)
      if a != b:
        why.append(f"summary {key} {b!r} != reference {a!r}")
  if got.error:
    why.append(got.error)
  elif got.step != reference.step:
    why.append(f"final checkpoint step {got.step} != reference {reference.step}")
  elif got.params.keys() != reference.params.keys():
    why.append("final params have other leaves than the reference")
  else:
    differ = [k for k in reference.params if got.params[k] != reference.params[k]]
    if differ:
      why.append(f"final params differ from the reference in {len(differ)} leaves ({differ[0]})")
  why += event_problems(got.losses, num_steps)
  changed = [
    s for s, v in got.losses.items() if len(v) == 1 and v != reference.losses.get(s, [None])
  ]
  if changed:
    why.append(f"train/loss differs from the reference at {len(changed)} steps ({min(changed)}..)")
  return why


def event_problems(losses: dict[int, list[float]], num_steps: int) -> list[str]:
  """TensorBoard's view: every step 1..num_steps once, no step twice."""
  why = []
  twice = sorted(s for s, v in losses.items() if len(v) > 1)
  missing = sorted(set(range(1, num_steps + 1)) - set(losses))
  extra = sorted(set(losses) - set(range(1, num_steps + 1)))
  if twice:
    why.append(f"TensorBoard shows {len(twice)} train/loss steps twice (first {twice[0]})")
  if missing:
    why.append(f"TensorBoard lacks {len(missing)} train/loss steps (first {missing[0]})")
  if extra:
    why.append(f"TensorBoard has train/loss beyond the run's steps (step {extra[0]})")
  return why


def readable(lines: Sequence[str]) -> list[str]:
  """Problems with stderr lines a user must read: tracebacks, escapes, control characters."""
  why = []
  if any(line.startswith("Traceback") or line.startswith("  File ") for line in lines):
    why.append("stderr holds a traceback")
  if any("\\x" in line or not line.isprintable() for line in lines):
    why.append("stderr holds unreadable bytes")
  return why
