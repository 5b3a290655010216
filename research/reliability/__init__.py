"""Fault injection: the trials `scripts/fault_campaign.py` repeats against the real scripts.

Each trial runs the project's own entry points as subprocesses and judges them only by what a
user sees: exit status, stderr, what is left in the workdir, and the numbers a resumed run ends
with. Nothing here is imported by training, serving or benchmarks.
"""
