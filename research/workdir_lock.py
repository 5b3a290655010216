"""One writer per workdir: an exclusive `flock` on `<workdir>/.lock`, held while a command writes.

Two commands writing one run directory at once lose data: two trainings each believe they own
the run and the later one's config, checkpoints and events replace the earlier one's (both had
exited 0), and a failed start's undo took back what the other had made. Every command that
writes a run (train, each run of a sweep and the sweep's own directory, train_vs_infer, a
benchmark into a run) holds this lock for its lifetime; a second writer is refused before it
writes anything, with one line naming the holder's PID.

The lock is the kernel's: it dies with its process, `kill -9` included, so a `.lock` file left
by a dead holder never blocks (the file only carries the holder's PID and command line for the
message). The holder removes the file when it lets go. Locks are per open file description, so
this process keeps one per workdir and a nested hold (train_vs_infer trains, and training takes
the lock again) only counts up. Nothing here imports JAX.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import sys
from typing import Iterator, Sequence

from research import storage
from research.outputs import writable
from research.workdir import LOCK, WorkdirError


@dataclasses.dataclass
class _Held:
  fd: int
  created: list[str]  # directories this hold made (innermost first), removed at release if empty
  depth: int = 1


_held: dict[str, _Held] = {}


@contextlib.contextmanager
def hold(workdirs: Sequence[str]) -> Iterator[None]:
  """Holds every workdir's lock (creating the workdirs) for the block; refuses with
  WorkdirError, having written nothing, when another process holds one of them."""
  taken: list[str] = []
  try:
    for workdir in workdirs:
      taken.append(acquire(workdir))
    yield
  finally:
    for key in reversed(taken):
      release(key)


def acquire(workdir: str) -> str:
  """Takes `workdir`'s lock (or counts up one this process holds); returns the key `release`
  takes. A directory that did not exist is created, and removed again at release if empty."""
  key = os.path.realpath(workdir)
  if key in _held:
    _held[key].depth += 1
    return key
  created = _make_dirs(workdir)
  try:
    _held[key] = _Held(_lock(workdir), created)
  except BaseException:
    _remove_empty(created)
    raise
  return key


def release(key: str) -> None:
  """Lets go of one hold; the last removes the lock file and the directories the hold made
  (when empty), then unlocks."""
  held = _held[key]
  held.depth -= 1
  if held.depth:
    return
  del _held[key]
  lock_path = os.path.join(key, LOCK)
  with contextlib.suppress(OSError):
    if _same_file(held.fd, lock_path):  # removed while held: no other process holds it yet
      os.remove(lock_path)
  _remove_empty(held.created)
  os.close(held.fd)  # unlocks


def release_all() -> None:
  """Lets go of every hold at once, for a process about to `os._exit` (a signal before training
  started): its lock files and the empty directories made for them go too."""
  for key in list(_held):
    _held[key].depth = 1
    with contextlib.suppress(Exception):
      release(key)


def holder(workdir: str) -> str | None:
  """What `<workdir>/.lock` says about its holder ("PID (command)"), or None when unreadable."""
  try:
    with open(os.path.join(workdir, LOCK)) as f:
      text = f.read(4096).strip()
  except OSError:
    return None
  pid, _, command = text.partition(" ")
  if not pid.isdigit():
    return None
  command = command if len(command) <= 120 else command[:117] + "..."
  return f"process {pid}" + (f" ({command})" if command else "")


def _lock(workdir: str) -> int:
  """An open, locked descriptor of the workdir's lock file holding this process's PID."""
  lock_path = os.path.join(workdir, LOCK)
  for _ in range(20):  # only a holder removing the file as this opens it makes this retry
    try:
      fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:  # the workdir went with its last holder's release: make it again
      os.makedirs(workdir, exist_ok=True)
      continue
    except OSError as e:
      raise WorkdirError(
        f"cannot lock workdir {workdir!r}: {lock_path} is not usable ({e.strerror}); "
        f"remove it or choose another --workdir"
      ) from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
        raise WorkdirError(f"cannot lock workdir {workdir!r} ({e.strerror})") from None
      who = holder(workdir) or "another process"
      raise WorkdirError(
        f"workdir {workdir!r} is in use by {who}, which is writing it; wait for it to finish, "
        f"or choose another --workdir"
      ) from None
    if not _same_file(fd, lock_path):  # its holder removed it between our open and flock
      os.close(fd)
      continue
    try:
      with storage.reported(f"cannot lock workdir {workdir!r}", where=workdir):
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {' '.join(sys.argv)}\n".encode(errors="replace"))
    except BaseException:
      os.close(fd)
      raise
    return fd
  raise WorkdirError(f"cannot lock workdir {workdir!r}: its lock file keeps changing; retry")


def _same_file(fd: int, path: str) -> bool:
  try:
    here, there = os.fstat(fd), os.stat(path)
  except OSError:
    return False
  return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _make_dirs(workdir: str) -> list[str]:
  """Creates `workdir` and any missing parents; the ones made, innermost first. Refuses a
  read-only or unusable workdir with the line `prepare` gives."""
  missing, d = [], os.path.abspath(workdir)
  while not os.path.exists(d):
    missing.append(d)
    d = os.path.dirname(d)
  if not missing and os.path.isdir(workdir) and not writable(workdir):
    raise WorkdirError(f"workdir {workdir!r} is read-only; choose another --workdir")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    _remove_empty([m for m in missing if os.path.isdir(m)])
    raise WorkdirError(
      f"workdir {workdir!r} is not writable ({e.strerror}); choose another --workdir"
    ) from None
  return missing


def _remove_empty(directories: Sequence[str]) -> None:
  for d in directories:  # innermost first
    with contextlib.suppress(OSError):
      os.rmdir(d)
