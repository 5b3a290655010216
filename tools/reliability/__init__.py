"""Fault injection: the trials `scripts/fault_campaign.py` repeats against the real scripts.

Each trial runs the project's own entry points as subprocesses and judges them only by what a
user sees: exit status, stderr, what is left in the workdir, and the numbers a resumed run ends
with. It lives outside the library (research/), which never imports it, and is not installed
with the package: it runs against this checkout's scripts/ and experiments/.

  campaign.py             the reference run, the plan of every kind, trials two at a time
  harness.py              launching a script in its own session; reading back how a run ended
  trials.py               kill9, sigterm, sigint: signals at drawn moments, then the resume
  damage.py               damaged: each kind of checkpoint damage, inference and the resume
  bad_inputs.py           bad_inputs: the catalog of mistakes (judge.py judges one, case_files.py
                          makes its files, in_process.py runs it inside a test)
  two_process.py          two_process: two --distributed processes on loopback
  concurrent_writers.py   concurrent: two writers on one workdir, a failed start beside another
                          process's files, a lock left by kill -9
  storage_failures.py     storage: read-only checkpoints, a full disk (both mount: root only,
                          else skipped), `checkpoints` a file
  sweep_signals.py        sweep_signals: signals to a sweep's parent, kill -9 of a worker or the
                          parent (sweep_runs.py: the sweep, its reference and its processes)
  report.py               the markdown and JSON report
"""
