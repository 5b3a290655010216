"""Several processes (multi-host): `jax.distributed` set up from the environment, ending together.

Who is who: `JAX_COORDINATOR_ADDRESS` (host:port of process 0), `JAX_NUM_PROCESSES` and
`JAX_PROCESS_ID`; inside a SLURM job step (srun) the count and id default to `SLURM_NTASKS` and
`SLURM_PROCID`, and jax derives the address from `SLURM_STEP_NODELIST` (port from the job id, or
`JAX_COORDINATOR_PORT`). jax 0.10.2 reads only the address from the environment (both processes
died with `Number of processes must be defined`), so count and id are passed explicitly. The
coordinator listens on the address it was given (jax's default is every interface, `[::]:port`)
or on `JAX_COORDINATOR_BIND_ADDRESS`; under SLURM it keeps jax's default.

A lost peer ends every process within `peer_timeout_seconds`, with one line. The bound is the
runtime's own heartbeat timeout: a process silent that long is declared dead and every other
process is aborted by the runtime; when the coordinator (process 0) goes, the others are aborted
at once. That abort is C++ (a 20-60 line log and stack trace) and cannot be caught in Python in
jaxlib 0.10.2, so each process's stderr runs through `distributed_log`, which turns it into one
`error: lost process N ...` line. Measured on 127.0.0.1 (2 processes x 1 CPU device, an MLP,
peer timeout 5 s, SIGKILL at a checkpoint, in a save or at startup): process 1 killed, process 0
exited 3.1-5.6 s later (11 kills); process 0 killed, process 1 exited 0.3-0.8 s later (7 kills);
every time with that one line and status 134 (the runtime's abort). Before: about 90 s, then a
63-line abort. A process that never connects holds the others for `CONNECT_SECONDS`, then each
says so in one line.

Errors of the process itself (`exit_on_error`): it prints its one line, waits for the others at a
barrier (a config error strikes every process at the same point), and leaves with `os._exit`. A
process that returned normally instead would wait in jax's shutdown barrier for peers that are
blocked in the next collective, for 300 s, then abort them all.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from typing import Iterator, Mapping, NoReturn

from research.training.distributed_log import EXITING
from research.training.parallel import ParallelError

ADDRESS, COUNT, INDEX = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"
BIND = "JAX_COORDINATOR_BIND_ADDRESS"
SLURM = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
CONNECT_SECONDS = 300  # how long process 0 waits for every process to connect (jax's default)
FILTER_DRAIN_SECONDS = 5  # at exit, how long the filter may take to write out
VERDICT_GRACE_SECONDS = 10  # after the peer timeout, how long a failed collective waits for it
# What a collective or coordination call says when a peer has gone.
PEER_TROUBLE = ("Gloo", "Connection reset by peer", "Socket closed", "UNAVAILABLE:")
FILTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_log.py")
USAGE = (
  f"on every process set {ADDRESS}=<host:port of process 0>, {COUNT}=<N> and "
  f"{INDEX}=<0..N-1>, or start it as a SLURM job step (srun)"
)


@dataclasses.dataclass(frozen=True)
class Processes:
  """Where the coordinator is and which process this is."""

  coordinator: str | None  # host:port; None: jax derives it from SLURM
  count: int
  index: int
  bind: str | None  # where process 0's coordinator listens; None: jax's default, every interface
  source: str  # "JAX" or "SLURM": where count and id came from


def from_environment(environ: Mapping[str, str] | None = None) -> Processes:
  """The processes as the environment declares them; a ParallelError naming what to set."""
  env = os.environ if environ is None else environ
  slurm = all(env.get(v) for v in SLURM)
  address = env.get(ADDRESS) or None
  count = _read(env, COUNT, "SLURM_NTASKS" if slurm else None)
  index = _read(env, INDEX, "SLURM_PROCID" if slurm else None)
  missing = [ADDRESS] if address is None and not slurm else []
  missing += [name for name, value in ((COUNT, count), (INDEX, index)) if value is None]
  if missing:
    raise ParallelError(f"--distributed: {', '.join(missing)} not set; {USAGE}")
  (count_name, count_raw), (index_name, index_raw) = count, index
  n, i = _integer(count_name, count_raw), _integer(index_name, index_raw)
  if n < 1:
    raise ParallelError(f"{count_name}={count_raw}: the number of processes must be 1 or more")
  if not 0 <= i < n:
    raise ParallelError(
      f"{index_name}={index_raw} but {count_name}={count_raw}: ids run from 0 to {n - 1}, one "
      "per process"
    )
  if address is not None:
    _check_address(ADDRESS, address)
  bind = env.get(BIND) or address
  if env.get(BIND):
    _check_address(BIND, bind)
  source = "JAX" if count_name == COUNT and index_name == INDEX else "SLURM"
  return Processes(address, n, i, bind, source)


def _read(env: Mapping[str, str], name: str, fallback: str | None) -> tuple[str, str] | None:
  if env.get(name):
    return name, env[name]
  if fallback and env.get(fallback):
    return fallback, env[fallback]
  return None


def _integer(name: str, raw: str) -> int:
  try:
    return int(raw)
  except ValueError:
    raise ParallelError(f"{name}={raw!r} is not a whole number; {USAGE}") from None


def _check_address(name: str, address: str) -> None:
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ParallelError(
      f"{name}={address!r} is not host:port (e.g. 10.0.0.1:1234, 127.0.0.1:1234 on one machine)"
    )


def initialize(peer_timeout_seconds: int, environ: Mapping[str, str] | None = None) -> Processes:
  """Joins the processes the environment declares; call before any other JAX work.

  Returns who is who. Every process checks that all see the same number of local devices (the
  mesh takes the same number from each), and they stop together with one line if not.
  """
  if isinstance(peer_timeout_seconds, bool) or not isinstance(peer_timeout_seconds, int):
    raise ParallelError(f"peer_timeout_seconds must be a whole number, got {peer_timeout_seconds}")
  if peer_timeout_seconds < 1:
    raise ParallelError(f"peer_timeout_seconds must be 1 or more, got {peer_timeout_seconds}")
  processes = from_environment(environ)
  import jax

  if jax.distributed.is_initialized():
    return processes
  if processes.index == 0 and processes.bind:
    _check_free(processes.bind)
  _filter_stderr(processes, peer_timeout_seconds)
  # jax's preemption notifier takes SIGTERM over from Python (a SIGTERMed run went on training);
  # it is given back below, to the loop's handler (research/training/preemption.py): SIGTERM to
  # one of two processes then stopped both at one step, checkpointed, one line each, exit 143.
  # The service itself stays on: Orbax asks it at every save.
  sigterm = signal.getsignal(signal.SIGTERM)
  try:
    jax.distributed.initialize(
      processes.coordinator,
      processes.count,
      processes.index,
      coordinator_bind_address=processes.bind,
      heartbeat_timeout_seconds=peer_timeout_seconds,
      initialization_timeout=CONNECT_SECONDS,
    )
  except (RuntimeError, ValueError) as e:
    _release_stderr()  # the line goes out before the process does
    raise ParallelError(f"--distributed: {_one_line(e)}") from None
  if sigterm is not None:
    signal.signal(signal.SIGTERM, sigterm)
  with exit_on_error(peer_timeout_seconds):
    check_devices()
  return processes


def _check_free(address: str) -> None:
  """Process 0's coordinator must be able to listen there: jaxlib 0.10.2 segfaults, silently,
  when the port is taken (measured)."""
  host, _, port = address.rpartition(":")
  host = host.strip("[]")
  try:
    family, kind, proto, _, where = socket.getaddrinfo(
      host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as s:
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server would: TIME_WAIT is ok
      s.bind(where)
  except OSError as e:
    raise ParallelError(
      f"process 0 cannot listen on {address} ({e.strerror or e}); choose a free port, on an "
      "address of the machine that runs process 0"
    ) from None


def check_devices() -> None:
  """Every process must drive the same number of devices: the mesh takes as many from each."""
  import jax

  counts = collections.Counter(d.process_index for d in jax.devices())
  if len(set(counts.values())) > 1:
    listed = ", ".join(f"process {p}: {n}" for p, n in sorted(counts.items()))
    raise ParallelError(
      f"the processes see different numbers of devices ({listed}); give each the same "
      "(CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N; GPU: CUDA_VISIBLE_DEVICES)"
    )


def check_same_config(config: Mapping, peer_timeout_seconds: int) -> None:
  """Every process must train the same config: each publishes its own and compares it with
  process 0's (process 0 with every other's). Started with different ones, they had trained
  until the first `device_put` of differing values, then each printed a 36-line AssertionError
  called a bug; now each names the fields that differ, in one line."""
  import jax
  from jax._src import distributed as jax_distributed

  from research.config import config_differences, to_dict

  client = getattr(jax_distributed.global_state, "client", None)
  if client is None or jax.process_count() == 1:
    return
  mine = to_dict(config) if not isinstance(config, dict) else config
  index = jax.process_index()
  client.key_value_set(f"research/config/{index}", json.dumps(mine, sort_keys=True))
  timeout_ms = (peer_timeout_seconds + VERDICT_GRACE_SECONDS) * 1000
  for other in range(1, jax.process_count()) if index == 0 else [0]:
    theirs = json.loads(client.blocking_key_value_get(f"research/config/{other}", timeout_ms))
    differ = config_differences(mine, theirs)
    if differ:
      shown = "; ".join(
        f"{key}: {_dotted(theirs, key)!r} there, {_dotted(mine, key)!r} here" for key in differ[:3]
      )
      more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
      raise ParallelError(
        f"--distributed: process {other} was started with another config ({shown}{more}); start "
        f"every process with the same --config and --config.* flags"
      )


def _dotted(tree: Mapping, key: str):
  for part in key.split("."):
    tree = tree.get(part) if isinstance(tree, Mapping) else None
  return tree


class _Filter:
  process: subprocess.Popen | None = None
  stderr = -1  # the real stderr, handed back at exit


def _filter_stderr(processes: Processes, peer_timeout_seconds: int) -> None:
  """From here on this process's stderr (fd 2) goes through `distributed_log`, a separate process
  that writes to the real stderr and outlives this one."""
  read, write = os.pipe()
  where = processes.coordinator or "on the SLURM step's first node"
  numbers = (processes.index, processes.count, peer_timeout_seconds, CONNECT_SECONDS)
  argv = [*map(str, numbers), where]
  sys.stderr.flush()
  _Filter.process = subprocess.Popen(
    [sys.executable, "-I", FILTER, *argv], stdin=read, stdout=2, close_fds=True
  )
  _Filter.stderr = os.dup(2)
  os.dup2(write, 2)
  os.close(write)
  os.close(read)
  atexit.register(_at_exit)


def _at_exit() -> None:
  """A normal exit: leave the runtime first (its shutdown barrier, where a peer may still die, is
  still filtered), then hand the real stderr back."""
  import jax

  with contextlib.suppress(Exception):
    jax.distributed.shutdown()
  _release_stderr()


def _release_stderr() -> None:
  """fd 2 back to the real stderr, and the filter given time to write out: whoever reads this
  process's stderr once it has exited reads all of it (a test read an empty file otherwise)."""
  if _Filter.process is None:
    return
  sys.stderr.flush()
  os.dup2(_Filter.stderr, 2)  # closes the pipe's last writer: the filter sees its end
  with contextlib.suppress(subprocess.TimeoutExpired):
    _Filter.process.wait(FILTER_DRAIN_SECONDS)
  _Filter.process = None


@contextlib.contextmanager
def exit_on_error(peer_timeout_seconds: int) -> Iterator[None]:
  """An exception inside ends this process with one line, without leaving its peers waiting.

  A failed collective or coordination call most likely means a peer has gone: the runtime names
  it within the peer timeout, aborting this process with one line from the stderr filter. Errors of
  the project's own (classes from `research`) print their message; a signal (the loop's
  `Interrupted`, Ctrl-C) its line and code; anything else its traceback.
  """
  try:
    yield
  except (Exception, KeyboardInterrupt) as e:
    _leave(e, peer_timeout_seconds)


def _leave(error: BaseException, peer_timeout_seconds: int) -> NoReturn:
  if _peer_trouble(error):
    time.sleep(peer_timeout_seconds + VERDICT_GRACE_SECONDS)  # the runtime's verdict ends us
    line, code = f"error: {_one_line(error)}", 1
  else:
    line, code = _describe(error)
  print(line, file=sys.stderr, flush=True)
  sys.stdout.flush()
  os.write(2, EXITING)
  _together(peer_timeout_seconds)
  _release_stderr()
  os._exit(code)


def _peer_trouble(error: BaseException) -> bool:
  """Whether the error (or one it came from) is a failed collective or coordination call: what a
  lost peer causes here. A killed peer's collective surfaced as JaxRuntimeError in a train chunk
  and as ValueError ("Gloo AllGather failed") inside an Orbax save."""
  import jax

  chain, e = [], error
  while e is not None and e not in chain:
    chain.append(e)
    e = e.__cause__ or e.__context__
  return any(
    isinstance(e, jax.errors.JaxRuntimeError) or any(m in str(e) for m in PEER_TROUBLE)
    for e in chain
  )


def _describe(error: BaseException) -> tuple[str, int]:
  """The line and exit status a failure leaves with (the conventions of research.cli.run_main)."""
  code = getattr(error, "exit_code", None)
  if isinstance(code, int):  # preemption.Interrupted: checkpointed, stopped on a signal
    return str(error), code
  if isinstance(error, KeyboardInterrupt):
    return "interrupted; re-run the same command on every process to resume", 130
  if type(error).__module__.split(".")[0] == "research":  # the project's errors name the fix
    return f"error: {_one_line(error)}", 1
  from research import storage

  full_or_read_only = storage.describe(error)  # a full disk, a read-only directory, ...
  if full_or_read_only is not None:
    return f"error: {full_or_read_only}", 1
  traceback.print_exception(type(error), error, error.__traceback__)
  return f"error: {type(error).__name__} (a bug: the traceback is above)", 1


def _together(peer_timeout_seconds: int) -> None:
  """Waits up to the peer timeout for every process to fail too; if all do, disconnects cleanly,
  so none is aborted by another's exit."""
  import jax
  from jax._src import distributed as jax_distributed  # the runtime's barrier, with a timeout

  client = getattr(jax_distributed.global_state, "client", None)
  if client is None:
    return
  try:
    client.wait_at_barrier("research_exit", peer_timeout_seconds * 1000)
  except Exception:  # some process is still running: it will see this one lost
    return
  with contextlib.suppress(Exception):
    jax.distributed.shutdown()


def _one_line(e: BaseException) -> str:
  return "; ".join(line.strip() for line in str(e).splitlines() if line.strip()) or repr(e)
