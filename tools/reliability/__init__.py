"""Fault injection: the trials `scripts/fault_campaign.py` repeats against the real scripts.

Each trial runs the project's own entry points as subprocesses and judges them only by what a
user sees: exit status, stderr, what is left in the workdir, and the numbers a resumed run ends
with. It lives outside the library (research/), which never imports it, and is not installed
with the package: it runs against this checkout's scripts/ and experiments/.
"""
