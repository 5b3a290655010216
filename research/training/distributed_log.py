"""One line instead of the distributed runtime's abort: a filter between a process and its stderr.

When a peer of a multi-process run dies, JAX's coordination service does not raise in Python: a
C++ thread logs the error and aborts the process (`client.h:80] Terminating process because the
JAX distributed service detected fatal errors`, then a stack trace: 20-60 lines). It does so
within milliseconds when the coordinator (process 0) goes, and after the heartbeat timeout when
another process goes. jaxlib 0.10.2 offers no hook that survives it: a Python
`missed_heartbeat_callback` aborts with `std::bad_cast` before it runs (measured), and
`jax_enable_recoverability` changes nothing when the coordinator goes. So the process keeps its
abort, and its stderr runs through this filter, a separate process that outlives it: everything
passes through unchanged until the runtime warns or reports an error; from then on output is
held, and if the process ends in the runtime's abort the held text is replaced by one `error:`
line naming the lost process. If it ends otherwise, the held text is released as it was. A
library's error logged in Python (Orbax's failed save when the peer died mid-save) is held the
same way: it comes just before the abort.

Stdlib only and run by path (`python distributed_log.py ...`): it starts in milliseconds and
imports nothing of the project.
"""

from __future__ import annotations

import os
import re
import select
import signal
import sys

# A line the process writes right before it leaves on purpose (research/training/distributed.py):
# its own error line is out, and whatever the runtime says after it is noise.
EXITING = b"\x00research: exiting\n"
# absl's prefix: severity, date, time, thread, file:line]
LOG_LINE = re.compile(rb"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ([\w.]+):\d+\] ")
RUNTIME_SOURCES = (b"coordination_service", b"client.h", b"client.cc", b"preemption_")
# A library's error in Python (logging's default format, or a thread that died): when a peer is
# killed mid-save, Orbax logs the failed collective with its traceback (30 lines) just before the
# runtime's abort; held like the runtime's own errors, it is released if no abort follows.
PYTHON_ERRORS = (b"ERROR:", b"CRITICAL:", b"Exception in thread ")
FLUSH_PARTIAL_SECONDS = 0.2  # a partial line (a progress bar's \r update) waits at most this


class StderrFilter:
  """The filter's state machine over the bytes a process writes to stderr.

  `feed` returns what to write now; `close` (at the process's end) what to write last.
  """

  def __init__(
    self,
    process_id: int,
    num_processes: int,
    peer_timeout: int,
    coordinator: str,
    connect_timeout: int = 300,
  ):
    self.process_id, self.num_processes = process_id, num_processes
    self.peer_timeout, self.coordinator = peer_timeout, coordinator
    self.connect_timeout = connect_timeout
    self.pending = b""  # an incomplete line
    self.held: list[bytes] = []  # everything since the runtime's first error
    self.fatal = False  # the runtime's abort has begun
    self.exiting = False  # the process said it is leaving with its own line

  def feed(self, data: bytes) -> bytes:
    self.pending += data
    *lines, self.pending = self.pending.split(b"\n")
    out = b"".join(self._line(line + b"\n") for line in lines)
    if EXITING.startswith(self.pending):  # perhaps the start of the marker: wait for the rest
      return out
    return out + self._partial()

  def flush_partial(self) -> bytes:
    """An incomplete line that waited long enough: a C++ log line is written whole, so this is
    program output (a progress bar), passed on unless the runtime is failing."""
    out = self._partial()
    if self.pending and not (self.held or self.exiting):
      out, self.pending = out + self.pending, b""
    return out

  def close(self) -> bytes:
    out = self._line(self.pending) if self.pending else b""
    self.pending = b""
    if self.fatal:
      return out + (self.verdict() + "\n").encode()
    return out + b"".join(self.held)

  def verdict(self) -> str:
    """The one line for the runtime's abort, from what it logged (held)."""
    text = b"".join(self.held).decode("utf-8", "replace")
    n, again = self.num_processes, "re-run the same command on every process to resume"
    if "RegisterTask" in text or ("Deadline Exceeded" in text and "Connect" in text):
      return (
        f"error: not every process reached the coordinator {self.coordinator}; start the same "
        f"command on all {n} processes (JAX_PROCESS_ID 0 to {n - 1}) within "
        f"{self.connect_timeout} s of each other"
      )
    lost = lost_processes(text)
    if not lost:
      first = next((ln.strip() for ln in text.splitlines() if "Status:" in ln), "")
      return f"error: the distributed runtime failed ({first[:200]}); {again}"
    who = ", ".join(str(p) for p in lost)
    if lost == [0] and self.process_id != 0:
      who, why = "0, the coordinator,", "connection closed"
    else:
      why = f"no heartbeat for {self.peer_timeout} s"
    return (
      f"error: lost process {who} of {n} ({why}: killed, crashed or unreachable); "
      f"{again} from the last checkpoint"
    )

  def _partial(self) -> bytes:
    match = LOG_LINE.search(self.pending)
    if match and match.start() > 0 and not (self.held or self.exiting):
      # program output, then a log line in the same line (a progress bar without \n)
      out, self.pending = self.pending[: match.start()], self.pending[match.start() :]
      return out
    return b""

  def _line(self, line: bytes) -> bytes:
    if line == EXITING:  # the process's own line is out (or held, if the runtime failed first)
      self.exiting = True
      return b""
    match = LOG_LINE.search(line)
    severity = line[match.start() : match.start() + 1] if match else b""
    if self.exiting and not self.held:  # the process's line is out: the rest is noise
      return b""
    before = b""
    if not self.held:  # passing through until the runtime warns or anything reports an error
      if line.startswith(PYTHON_ERRORS):
        self.held.append(line)
        return b""
      if not (severity in (b"E", b"F") or (severity == b"W" and _from_runtime(match))):
        return line
      before, line = line[: match.start()], line[match.start() :]
    self.held.append(line)
    self.fatal = self.fatal or severity == b"F"
    return before


def _from_runtime(match: re.Match) -> bool:
  return any(source in match.group(1) for source in RUNTIME_SOURCES)


def lost_processes(text: str) -> list[int]:
  """The process ids a runtime error names as gone: the tasks that stopped sending heartbeats,
  or process 0 when the coordination service itself cannot be reached."""
  ids: set[int] = set()
  after = text.split("stopped sending heartbeats", 1)
  if len(after) > 1:
    for line in after[1].splitlines()[1:]:
      found = re.fullmatch(r"\s*(?:\S*task:)?(\d+)\s*", line)
      if not found:
        break
      ids.add(int(found.group(1)))
  ids.update(int(i) for i in re.findall(r"Task (\d+) heartbeat timeout", text))
  if not ids and ("Failed to send RPC to coordination service" in text or "leader task" in text):
    ids.add(0)
  return sorted(ids)


def main(argv: list[str]) -> int:
  """argv: process id, process count, peer timeout, connect timeout, coordinator address.
  stdin: the process's stderr; stdout: the real stderr. Runs until every writer is gone."""
  for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(signum, signal.SIG_IGN)  # the process decides; this only reports
  process_id, num_processes, peer_timeout, connect_timeout = (int(a) for a in argv[:4])
  f = StderrFilter(process_id, num_processes, peer_timeout, argv[4], connect_timeout)
  out = sys.stdout.buffer
  while True:
    ready, _, _ = select.select([0], [], [], FLUSH_PARTIAL_SECONDS if f.pending else None)
    data = os.read(0, 65536) if ready else None
    if data == b"":
      break
    try:
      out.write(f.feed(data) if data is not None else f.flush_partial())
      out.flush()
    except OSError:  # the real stderr is gone: keep draining so the process never blocks
      pass
  try:
    out.write(f.close())
    out.flush()
  except OSError:
    pass
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
