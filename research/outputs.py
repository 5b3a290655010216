"""Where and how every command writes its files: the one module for it.

- Checks on where a command will write, made before any work: a bad output path then costs
  nothing and leaves nothing behind, instead of failing after minutes of measuring. Each also
  refuses an output that would land on a run's own files or on the command's input
  (research/run_files.py).
- Atomic writers (text, bytes, JSON, `.npz`, a set of files, a whole directory): each writes a
  temporary beside its target and renames it into place, so a reader sees the old file or the
  new one, never half of one, and a failure (a full disk, a bug, Ctrl-C) leaves no temporary.
- The markdown table every report uses.

Nothing here imports JAX.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import Any, Iterable, Iterator, Mapping, Sequence

from research.errors import UserError


class OutputError(UserError, ValueError):
  """An output path that cannot be written as asked; the message names the flag and the fix."""


def writable(path: str) -> bool:
  """Whether this process may create files in the existing directory `path`.

  Root may write anywhere the filesystem allows, but a directory without any write bit was made
  read-only on purpose (`chmod -w`), so it counts as read-only for root too.
  """
  if not os.access(path, os.W_OK):
    return False
  return not (hasattr(os, "geteuid") and os.geteuid() == 0) or bool(os.stat(path).st_mode & 0o222)


def _check_parent(path: str, flag: str, must_exist: bool) -> None:
  """The directory `path` goes into: existing and writable, or creatable under one that is."""
  _check_directory(os.path.dirname(os.path.abspath(path)), path, flag, must_exist)


def _check_directory(directory: str, path: str, flag: str, must_exist: bool = False) -> None:
  if must_exist and not os.path.isdir(directory):
    raise OutputError(f"{flag} {path}: directory {directory} does not exist; create it first")
  ancestor = directory
  while not os.path.exists(ancestor):
    ancestor = os.path.dirname(ancestor)
  if not os.path.isdir(ancestor):
    raise OutputError(f"{flag} {path}: {ancestor} is a file, not a directory; choose another path")
  if not writable(ancestor):
    raise OutputError(f"{flag} {path}: {ancestor} is read-only; choose a writable path")


def check_output_file(
  path: str,
  flag: str,
  suffixes: Sequence[str] = (),
  parent_must_exist: bool = False,
  **protect: Iterable[Any],
) -> None:
  """`path` names a file this command may write (replacing one that is there): not a directory,
  with one of `suffixes` when given, in a directory that exists or can be made, and neither a
  run's own file nor an input (`protect`: `inputs`, `runs`, `own` of `run_files.check_targets`)."""
  _protect(flag, path, [path], protect)
  if not path:
    raise OutputError(f"{flag} is empty; give a file name")
  if path.endswith(("/", os.sep)) or os.path.isdir(path):
    example = f"{path.rstrip('/' + os.sep)}/out{suffixes[0] if suffixes else ''}"
    raise OutputError(f"{flag} {path} is a directory; give a file name such as {example}")
  if suffixes and os.path.splitext(path)[1].lower() not in suffixes:
    raise OutputError(f"{flag} {path} has an unknown type; use one of {', '.join(suffixes)}")
  _check_parent(path, flag, parent_must_exist)


def check_output_prefix(
  path: str, flag: str, suffixes: Sequence[str], **protect: Iterable[Any]
) -> None:
  """`path` is a prefix the command completes with each of `suffixes` (OUT.md, OUT.json); no
  OUT.<suffix> may be a run's own file or an input (`protect`: as for `check_output_file`)."""
  _protect(flag, path, [path + s for s in suffixes], protect)
  if not path:
    raise OutputError(f"{flag} is empty; give a path without extension (OUT.md, OUT.json)")
  if path.endswith(("/", os.sep)) or os.path.isdir(path):
    raise OutputError(
      f"{flag} {path} is a directory; give a path without extension "
      f"({os.path.join(path, 'report')} writes report{', report'.join(suffixes)})"
    )
  for suffix in suffixes:
    if os.path.isdir(path + suffix):
      raise OutputError(f"{flag}: {path + suffix} is a directory; choose another path")
  _check_parent(path, flag, must_exist=False)


def check_output_dir(
  path: str, flag: str, hint: str = "", names: Sequence[str] = (), **protect: Iterable[Any]
) -> None:
  """`path` is a directory this command may fill: an existing writable one, or one it can make;
  neither it nor the files it gets (`names`) a run's own file (`protect`: as for
  `check_output_file`)."""
  _protect(flag, path, [path, *(os.path.join(path, n) for n in names)], protect)
  if os.path.exists(path) and not os.path.isdir(path):
    raise OutputError(
      f"{flag} {path} is a file; this command writes a directory of files there, so give a "
      f"directory path (a new one, or an existing directory)"
    )
  if os.path.isdir(path):
    if not writable(path):
      raise OutputError(f"{flag} {path} is read-only; {hint or 'choose a writable directory'}")
    return
  _check_directory(os.path.abspath(path), path, flag)


def _protect(
  flag: str, given: str, targets: Sequence[str], protect: Mapping[str, Iterable[Any]]
) -> None:
  """The one check that no output lands on a run's own files or an input (run_files.py)."""
  if given:
    from research.run_files import check_targets  # it imports OutputError from here

    check_targets(flag, given, targets, **protect)


@contextlib.contextmanager
def atomic_path(path: str, tmp: str | None = None, optional: bool = False) -> Iterator[str]:
  """A temporary name beside `path` for the block to write; renamed onto `path` when the block
  ends, removed when it raises, so `path` keeps its old content and nothing else stays behind.

  The temporary keeps `path`'s extension (numpy's savers append one to a name without it);
  `tmp` names it instead (TensorBoard must not read a half-written event file). `optional`: a
  block that wrote nothing leaves `path` as it was. The directory must exist (the writers below
  make it).
  """
  tmp = tmp or f"{path}.tmp{os.getpid()}{os.path.splitext(path)[1]}"
  try:
    yield tmp
    if not (optional and not os.path.exists(tmp)):
      os.replace(tmp, path)
  except OSError as e:
    if e.filename is None:  # a write to a full disk names no file; the one line names this one
      e.filename = path
    raise
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)


def write_bytes(path: str, data: bytes) -> str:
  """Writes atomically (see `atomic_path`), making the directory if needed. Returns `path`."""
  _make_parent(path)
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(data)
  return path


def write_text(path: str, text: str) -> str:
  """Writes atomically, like `write_bytes`."""
  return write_bytes(path, text.encode())


def json_text(obj: Any) -> str:
  """`obj` as `write_json` writes it: indented, numpy scalars and arrays as numbers and lists."""
  return json.dumps(obj, indent=2, default=_json_default) + "\n"


def write_json(path: str, obj: Any) -> str:
  """Writes atomically, indented, numpy scalars and arrays as plain numbers and lists."""
  return write_bytes(path, json_text(obj).encode())


def write_npz(path: str, **arrays: Any) -> str:
  """Writes arrays to an uncompressed `.npz` atomically, like `write_bytes`."""
  import numpy as np

  _make_parent(path)
  with atomic_path(path) as tmp:
    np.savez(tmp, **arrays)
  return path


def write_all(files: Mapping[str, str | bytes], flag: str = "") -> None:
  """Writes every file or none: all go to temporaries first, and only then is each renamed into
  place. With `flag`, a file that cannot be written is one OutputError naming it and the flag."""
  path = ""
  try:
    with contextlib.ExitStack() as stack:
      for path, data in files.items():
        _make_parent(path)
        tmp = stack.enter_context(atomic_path(path))
        with open(tmp, "wb") as f:
          f.write(data.encode() if isinstance(data, str) else data)
  except OSError as e:
    if not flag:
      raise
    raise OutputError(f"cannot write {path} ({e.strerror}); choose another {flag}") from None


@contextlib.contextmanager
def replacing(path: str, remake: Sequence[str] = ()) -> Iterator[str]:
  """For a block that writes a directory of outputs (bench_inference's OUT): yields a temporary
  directory beside `path` to write into, which starts as a copy of `path` without the entries
  named in `remake` (re-made whole by the block, like LoadGen's logs). When the block ends the
  temporary takes `path`'s place in one step (one rename exchange, or two renames where the
  file system has none); when it raises (a full disk, Ctrl-C, or SIGTERM and SIGHUP, which
  `cli.run_main` turns into an exception) the temporary is removed and `path` stays as it was.
  A reader sees the old directory or the new one, never half of each.

  The temporary is `.NAME.tmp<pid>`; one left by a process killed with -9 is removed by the next
  run. Where `path` cannot be renamed (a mount point, or the working directory or one above
  it) the block writes into `path` itself, as before.
  """
  target = os.path.realpath(path)
  parent, name = os.path.split(target)
  cwd = os.path.realpath(os.getcwd())
  if os.path.ismount(target) or cwd == target or cwd.startswith(target + os.sep):
    os.makedirs(target, exist_ok=True)
    yield target
    return
  os.makedirs(parent, exist_ok=True)
  _remove_stale(parent, f".{name}.tmp")
  staging = os.path.join(parent, f".{name}.tmp{os.getpid()}")
  shutil.rmtree(staging, ignore_errors=True)
  try:
    if os.path.isdir(target):
      skip = set(remake)
      shutil.copytree(
        target,
        staging,
        symlinks=True,
        ignore=lambda d, names: [n for n in names if d == target and n in skip],
      )
    else:
      os.mkdir(staging)
    try:
      yield staging
    except OSError as e:  # named where the file was going, not by its temporary name
      if isinstance(e.filename, str) and e.filename.startswith(staging + os.sep):
        e.filename = target + e.filename[len(staging) :]
      raise
    if not os.path.isdir(target):
      os.rename(staging, target)
    elif not _exchange(staging, target):  # then `staging` holds the old directory
      old = staging + ".old"
      os.rename(target, old)
      try:
        os.rename(staging, target)
      except BaseException:
        os.rename(old, target)
        raise
      os.rename(old, staging)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _exchange(a: str, b: str) -> bool:
  """Swaps two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
  try:
    import ctypes

    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (OSError, AttributeError):
    return False
  at_fdcwd, rename_exchange = -100, 2
  return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _remove_stale(parent: str, prefix: str) -> None:
  """Removes `prefix<pid>` temporaries in `parent` whose process is gone (killed with -9)."""
  for entry in os.listdir(parent):
    pid = entry[len(prefix) :].removesuffix(".old")
    if entry.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
      shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def rename(source: str, target: str) -> None:
  """Moves a file or directory in one step within a filesystem (a damaged checkpoint step set
  aside): it is whole under one name or the other, never half moved. Replaces a file at `target`."""
  os.replace(source, target)


def _make_parent(path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def _json_default(o: Any) -> Any:
  import numpy as np

  if isinstance(o, (np.integer,)):
    return int(o)
  if isinstance(o, (np.floating,)):
    return float(o)
  if isinstance(o, np.ndarray):
    return o.tolist()
  return str(o)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
  """A pipe table; a `|` inside a cell (`max |Δlogit|`) is escaped so it cannot split the cell.

  `align` gives one letter per column, `l` or `r` (right-aligned: `---:`); default all left.
  """

  def cell(c: Any) -> str:
    return str(c).replace("|", "\\|")

  rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align.ljust(len(header), "l"))
  lines = ["| " + " | ".join(map(cell, header)) + " |", rule]
  lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
  return "\n".join(lines)
