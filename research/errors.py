"""The base of every error a user can cause: a bad flag value, config, file, workdir or input.

Each layer raises its own subclass (ConfigError, DataError, CheckpointError, ...) with a message
that names what is wrong and the fix; `research.cli.run_main` catches `UserError` alone and
prints it as one `error:` line. An error that is a bug, or a failure of the machine or of a
library under a harness (LoadGen's `LoadGenRunError`), is not a UserError: it keeps its
traceback. Subclasses keep their builtin base (ValueError, RuntimeError) too, for callers and
tests that catch those. Nothing here imports anything.
"""

from __future__ import annotations


class UserError(Exception):
  """An error the user can fix; its message is one line (a quoted multi-line one is joined)."""

  def __str__(self) -> str:
    text = super().__str__()
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or repr(self)
