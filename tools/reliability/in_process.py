"""Running a bad-input case's script inside this test process, judged as a fresh process is.

A fresh Python per case pays for importing JAX and the library (seconds) to read one stderr line.
Where what is judged is the script's own handling of the mistake (its exit status, its one line,
the files it leaves), the script can run here instead: `runpy` executes it as `__main__`, so
`research.cli.run_main` reports the error exactly as it does for a user, and ends the script with
`SystemExit`, caught here. (`run_main` leaves through `sys.exit` only where pytest is imported;
anywhere else it calls `os._exit`, which would end the caller too, so this refuses to run there.)

Everything a script may change in its process is put back afterwards: argv, the working
directory, the environment, CPU affinity (`--threads 1` pins the process), the SIGINT and SIGTERM
handlers `scripts/train.py` takes over, and warnings filters. The case sees what a fresh process
would show on stderr: Python's and C's writes to it, warnings under Python's default filters, and
log records of WARNING and above. What only a fresh process shows is not seen here: output while
Python starts or shuts down (a background thread's traceback at exit, which is why failing
scripts leave through `os._exit`), log handlers a library bound to another stream, and a hang
(there is no timeout). Judge those through `judge.run_subprocess`. One case at a time: the
working directory, the environment and the standard streams belong to the whole process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import runpy
import signal
import sys
import tempfile
import traceback
import warnings
from typing import Iterator, Sequence

from tools import REPO
from tools.reliability.judge import script_env

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_in_process(argv: Sequence[str], timeout: float | None = None) -> tuple[int | None, str]:
  """(exit status, stderr) of `python *argv` run in this process; `timeout` is not enforced (the
  signature is `judge.Runner`'s)."""
  if "pytest" not in sys.modules:
    raise RuntimeError("run_in_process runs scripts inside a test process only (see its module)")
  with tempfile.TemporaryFile() as err:
    with _restored(), _stderr_into(err):
      sys.argv = list(argv)
      code = _run_script(os.path.join(REPO, argv[0]))
    err.seek(0)
    return code, err.read().decode("utf-8", errors="backslashreplace")


def _run_script(path: str) -> int:
  """The exit status `python path` would have; an uncaught exception's traceback goes to stderr."""
  with warnings.catch_warnings():
    warnings.showwarning = _show_warning  # at once, to stderr (pytest would record it)
    warnings.resetwarnings()  # Python's defaults, not the test run's filters
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
      warnings.simplefilter("ignore", category)
    try:
      runpy.run_path(path, run_name="__main__")
      code = 0
    except SystemExit as e:  # as the interpreter reads it: None is 0, a message is printed, 1
      if e.code is None or isinstance(e.code, int):
        code = e.code or 0
      else:
        print(e.code, file=sys.stderr)
        code = 1
    except Exception:
      traceback.print_exc()
      code = 1
  return code


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
  sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _stderr_into(file) -> Iterator[None]:
  """Both Python's `sys.stderr` and file descriptor 2 (C libraries) into `file`; stdout, as the
  subprocess runner does, nowhere. Log records of WARNING and above are written too, as Python's
  last-resort handler would in a fresh process."""
  sys.stdout.flush()
  sys.stderr.flush()
  saved_fd = os.dup(2)
  saved_streams = sys.stdout, sys.stderr
  handler = logging.StreamHandler()
  try:
    os.dup2(file.fileno(), 2)
    sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)
    sys.stdout = open(os.devnull, "w")
    handler.setStream(sys.stderr)
    handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)
    yield
  finally:
    logging.getLogger().removeHandler(handler)
    sys.stderr.flush()
    sys.stdout.close()
    sys.stdout, sys.stderr = saved_streams
    os.dup2(saved_fd, 2)
    os.close(saved_fd)


@contextlib.contextmanager
def _restored() -> Iterator[None]:
  """The process as it was, whatever the script changed; the script runs in the repository with
  the subprocess runner's environment."""
  from research.training import preemption

  argv, cwd, environ = sys.argv[:], os.getcwd(), dict(os.environ)
  affinity = os.sched_getaffinity(0)
  handlers = {s: signal.getsignal(s) for s in _SIGNALS}
  state = {k: v for k, v in vars(preemption._State).items() if not k.startswith("__")}
  no_bytecode = sys.dont_write_bytecode
  try:
    os.chdir(REPO)
    os.environ.update(script_env())
    sys.dont_write_bytecode = True  # a config imported from the case's directory leaves no cache
    yield
  finally:
    sys.argv, sys.dont_write_bytecode = argv, no_bytecode
    os.chdir(cwd)
    for key in set(os.environ) - set(environ):
      del os.environ[key]
    os.environ.update({k: v for k, v in environ.items() if os.environ.get(k) != v})
    os.sched_setaffinity(0, affinity)
    for s, handler in handlers.items():
      if handler is not None:  # None: set outside Python, not to be put back from here
        signal.signal(s, handler)
    for k, v in state.items():
      setattr(preemption._State, k, v)
