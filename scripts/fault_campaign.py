"""Fault injection against the real scripts (kill -9, SIGTERM, Ctrl-C, damaged checkpoints, bad
input, two processes, two writers on one workdir, failing storage, signals to a sweep):
`python scripts/fault_campaign.py --help` says how.

The campaign is test tooling kept outside the installed package, in tools/ (tools/fault_campaign.py
and tools/reliability/). This script starts it with this checkout importable, in this same process
(exec), so signals reach the campaign directly and its exit status is this script's. The recorded
command keeps this script's name, as typed.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
  start = (
    f"import runpy, sys; sys.argv[0] = {sys.argv[0]!r}; "
    "runpy.run_module('tools.fault_campaign', run_name='__main__')"
  )
  os.execve(sys.executable, [sys.executable, "-c", start, *sys.argv[1:]], env)
