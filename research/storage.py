"""Storage that fails under a command (a full disk, a read-only directory, a file where a
directory should be) as one `error:` line that names the path and the fix.

Such a failure is the machine's, not a bug, so its traceback helps no one: a full disk during
training, export, infer or bench had printed 14-436 lines. `describe` finds the failure in
whatever was raised: an OSError with one of `ERRNOS`, or one chained or grouped inside another
exception (Orbax, TensorStore), whose text may only carry the system's words ("No space left on
device"). `research.cli.run_main` turns it into the line; `reported` does the same for a block
that can say what it was writing (a checkpoint). Nothing here imports JAX.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from typing import Iterator

from research.errors import UserError

# Failures of the storage itself: whoever the path, the fix is the same.
_DEVICE = {
  errno.ENOSPC: "No space left on device",
  errno.EDQUOT: "Disk quota exceeded",
  errno.EFBIG: "File too large",
  errno.EROFS: "Read-only file system",
}
# Failures of one path: only an OSError that names it counts (EPERM also comes from a process
# call, ENOTDIR from a bad argument).
_PATH = (errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR)
ERRNOS = (*_DEVICE, *_PATH)
_QUOTED_PATH = re.compile(r"""["'](/[^"'\s]+)["']""")


class StorageError(UserError, OSError):
  """Storage failed under the command; the message names the path and the fix."""


def failure(e: BaseException) -> tuple[int, str] | None:
  """(errno, path or "") of the storage failure in `e`, its causes, contexts and group members,
  or None when there is none."""
  seen: set[int] = set()
  todo = [e]
  while todo:
    x = todo.pop(0)
    if x is None or id(x) in seen:
      continue
    seen.add(id(x))
    if isinstance(x, OSError) and x.errno in ERRNOS:
      path = os.fsdecode(x.filename) if x.filename is not None else ""
      if x.errno in _DEVICE or path:
        return x.errno, path
    text = str(x)
    for code, words in _DEVICE.items():
      if words in text:
        found = _QUOTED_PATH.search(text)
        return code, found.group(1) if found else ""
    todo += [x.__cause__, x.__context__, *getattr(x, "exceptions", ())]
  return None


def describe(e: BaseException, what: str = "", where: str = "") -> str | None:
  """The one line for the storage failure in `e` (None: not one); `what` says what was being
  written, e.g. "checkpoint step 200 not saved"; `where` names the directory written to for a
  full or read-only file system, instead of the (temporary) file that failed."""
  found = failure(e)
  if found is None:
    return None
  code, path = found
  if where and code in _DEVICE:
    path = where
  shown = path or "a file"
  if code in (errno.ENOSPC, errno.EDQUOT):
    where = f"the file system of {path}" if path else "the file system written to"
    fix = "free space on it (or write elsewhere) and re-run the same command"
    line = f"{where} is full ({_DEVICE[code].lower()}): {fix}"
  elif code == errno.EFBIG:
    line = f"{shown} is too large for its file system: write it elsewhere and re-run"
  elif code == errno.EROFS:
    directory = _existing_directory(path) if path else "the directory written to"
    written = f", so {path} cannot be written" if path and path != directory else ""
    line = (
      f"{directory} is read-only (a read-only file system){written}: make it writable (remount "
      f"it read-write) or choose another directory, then re-run"
    )
  elif code in (errno.EACCES, errno.EPERM):
    line = (
      f"permission denied on {path}: make it (and its directory) writable by this user, or "
      f"choose another path, then re-run"
    )
  elif code == errno.ENOTDIR:
    blocker = _file_in_the_way(path)
    line = (
      f"{blocker} is a file where a directory should be (for {path}): remove or rename the "
      f"file in the way, or choose another path, then re-run"
    )
  else:  # EISDIR
    line = f"{path} is a directory where a file should be: remove it or choose another path"
  return f"{what}: {line}" if what else line


@contextlib.contextmanager
def reported(what: str = "", where: str = "") -> Iterator[None]:
  """A storage failure inside the block becomes a `StorageError` with `describe`'s line."""
  try:
    yield
  except StorageError:
    raise
  except Exception as e:
    line = describe(e, what, where)
    if line is None:
      raise
    raise StorageError(line) from e


def _existing_directory(path: str) -> str:
  """The nearest directory of `path` (itself included) that exists: the one to fix."""
  path = os.path.abspath(path)
  while not os.path.isdir(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return path


def _file_in_the_way(path: str) -> str:
  """The first component of `path` that exists and is not a directory (or `path`)."""
  path = os.path.abspath(path)
  parts = path.split(os.sep)
  for i in range(2, len(parts) + 1):
    prefix = os.sep.join(parts[:i])
    if os.path.lexists(prefix) and not os.path.isdir(prefix):
      return prefix
  return path
