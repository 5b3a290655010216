"""Checks on where a command will write, made before any work: a bad output path then costs
nothing and leaves nothing behind, instead of failing after minutes of measuring.

Nothing here imports JAX.
"""

from __future__ import annotations

import os
from typing import Sequence


class OutputError(ValueError):
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
  path: str, flag: str, suffixes: Sequence[str] = (), parent_must_exist: bool = False
) -> None:
  """`path` names a file this command may write (replacing one that is there): not a directory,
  with one of `suffixes` when given, in a directory that exists or can be made."""
  if not path:
    raise OutputError(f"{flag} is empty; give a file name")
  if path.endswith(("/", os.sep)) or os.path.isdir(path):
    example = f"{path.rstrip('/' + os.sep)}/out{suffixes[0] if suffixes else ''}"
    raise OutputError(f"{flag} {path} is a directory; give a file name such as {example}")
  if suffixes and os.path.splitext(path)[1].lower() not in suffixes:
    raise OutputError(f"{flag} {path} has an unknown type; use one of {', '.join(suffixes)}")
  _check_parent(path, flag, parent_must_exist)


def check_output_prefix(path: str, flag: str, suffixes: Sequence[str]) -> None:
  """`path` is a prefix the command completes with each of `suffixes` (OUT.md, OUT.json)."""
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


def check_output_dir(path: str, flag: str, hint: str = "") -> None:
  """`path` is a directory this command may fill: an existing writable one, or one it can make."""
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
