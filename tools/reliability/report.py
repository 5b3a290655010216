"""The campaign's report: counts per trial kind against the issue's done-when, every failure
with its reason, and provenance; the raw per-trial results as JSON beside it."""

from __future__ import annotations

import os
import statistics
from collections import Counter
from typing import Any, Sequence

from research.outputs import markdown_table, write_json, write_text
from research.provenance import provenance
from tools.reliability.damage import DAMAGES
from tools.reliability.harness import TrialResult

ORDER = (
  "kill9",
  "sigterm",
  "sigterm_startup",
  "sigint",
  "damaged",
  "bad_inputs",
  "two_process",
  "concurrent",
  "storage",
  "sweep_signals",
)
# kind -> (trials the done-when asks for, what each must show)
CRITERIA = {
  "kill9": (20, "kill -9 at 1-3 random moments, resumed: ends bitwise"),
  "sigterm": (20, "exit 143 within 10 s, one line, checkpoint = line = events step; bitwise"),
  "sigterm_startup": (1, "exit 143 at once with one line; the same command then ends bitwise"),
  "sigint": (20, "no hang (30 s), exit 130, one line (two after a second Ctrl-C); bitwise"),
  "damaged": (
    len(DAMAGES),
    "infer names the damage; resumes from the newest good step, damaged steps moved intact; "
    "bitwise",
  ),
  "bad_inputs": (90, "one `error:` line, exit 1, nothing created or half-written"),
  "two_process": (
    1,
    "2 processes x 1 device on loopback end bitwise as 1 process x 2 devices; a killed peer "
    "ends the other within the peer timeout with one line; the resume ends bitwise",
  ),
  "concurrent": (
    4,
    "a second train.py or sweep.py on a workdir in use: refused with one `error:` line naming the "
    "holder's PID, the first untouched, no hang, bitwise; a failed start deletes only what it "
    "made; a lock left by kill -9 blocks nothing",
  ),
  "storage": (
    3,
    "checkpoints/ read-only mid-run, or a full disk: one `error:` line within 10 s, no temporary "
    "file left, bitwise once fixed; `checkpoints` a file: refused in one line, the finished run "
    "unchanged",
  ),
  "sweep_signals": (
    6,
    "SIGTERM/SIGINT/SIGHUP to the parent, Ctrl-C: exit 143/130/129 within 10 s, one line, no "
    "process left, each run at a checkpoint; a killed worker: one line, non-zero; a killed "
    "parent: its workers gone within 10 s; the re-run bitwise",
  ),
}
SCENARIO_KINDS = ("concurrent", "storage", "sweep_signals")


def summary_rows(results: Sequence[TrialResult]) -> list[dict[str, Any]]:
  """One row per trial kind that ran: passed, total, whether the done-when is met, timings."""
  rows = []
  for kind in ORDER:
    rs = [r for r in results if r.kind == kind]
    if not rs:
      continue
    passed = sum(r.ok for r in rs)
    skipped = sum(bool(r.skipped) for r in rs)
    need, what = CRITERIA[kind]
    rows.append(
      {
        "kind": kind,
        "passed": passed,
        "total": len(rs),
        "skipped": skipped,
        "required": need,
        "met": passed == len(rs) and len(rs) >= need,
        "verdict": verdict(passed, len(rs), need, skipped),
        "criterion": what,
        "median_seconds": statistics.median(
          r.seconds for r in rs if not r.skipped or skipped == len(rs)
        ),
        "notes": _notes(kind, rs),
      }
    )
  return rows


def verdict(passed: int, total: int, required: int, skipped: int = 0) -> str:
  """Whether the done-when is met: "yes"; "no" when a trial failed; "skipped" when none failed
  but some could not run here (no root to mount); "too few" when every trial passed but fewer
  ran than the done-when asks (--quick, a small --trials). Neither of the last two is a failure."""
  if passed + skipped < total:
    return "no"
  if skipped:
    return "skipped"
  return "yes" if total >= required else "too few"


def _notes(kind: str, rs: Sequence[TrialResult]) -> str:
  if kind in SCENARIO_KINDS:
    return _scenario_notes(rs)
  if kind == "kill9":
    kills = [k["landed"] for r in rs for k in r.details.get("kills", [])]
    at = Counter(k.split(":")[0] for k in kills)
    return (
      f"{len(kills)} kills: {at['startup']} in startup, {at['training']} in training, "
      f"{at['mid_save']} mid-save"
    )
  landed = Counter(r.details.get("landed") for r in rs)
  where = f"landed: {landed['startup']} startup, {landed['training']} training, "
  where += f"{landed['mid_save']} mid-save"
  exits = [r.details["exit_seconds"] for r in rs if "exit_seconds" in r.details]
  timing = (
    f"exit after the signal median {statistics.median(exits):.2f} s, max {max(exits):.2f} s"
    if exits
    else "no exit measured"
  )
  if kind in ("sigterm", "sigterm_startup"):
    return f"{timing}; {where}"
  if kind == "sigint":
    hangs = sum(bool(r.details.get("hang")) for r in rs)
    second = sum(r.details.get("second_sigint_after") is not None for r in rs)
    return f"hangs: {hangs}; second Ctrl-C in {second}; {timing}; {where}"
  if kind == "damaged":
    return ", ".join(r.details.get("damage", "?") for r in rs)
  if kind == "bad_inputs":
    scripts = Counter(r.details.get("name", "?").split(":")[0] for r in rs)
    return f"{len(scripts)} scripts: " + ", ".join(f"{s} {n}" for s, n in scripts.most_common())
  if kind == "two_process":
    return "; ".join(_two_process_note(r.details) for r in rs)
  return ""


def _scenario_notes(rs: Sequence[TrialResult]) -> str:
  """Each named trial's verdict, with the exit time after its signal or failure where measured."""
  parts = []
  for r in rs:
    verdict_ = "pass" if r.ok else "skipped" if r.skipped else "FAIL"
    exit_ = r.details.get("exit_seconds")
    parts.append(
      f"{r.details.get('name', '?')} {verdict_}"
      + (f" (exit {exit_:.2f} s)" if exit_ is not None else "")
    )
  reasons = sorted({r.skipped for r in rs if r.skipped})
  return ", ".join(parts) + "".join(f"; skipped: {reason}" for reason in reasons)


def _two_process_note(d: dict[str, Any]) -> str:
  lines = d.get("survivor_stderr") or []
  return (
    f"{d.get('num_steps')} steps; process {d.get('killed_process')} killed at step "
    f"{d.get('kill_step')}: the other exited {d.get('survivor_exit_seconds')} s later (timeout "
    f"{d.get('peer_timeout_seconds')} s) with {len(lines)} line(s); matches 1x2: "
    f"{d.get('two_process_matches_one_process')}, resumed matches: "
    f"{d.get('resumed_matches_one_process')}"
  )


def render(results: Sequence[TrialResult], info: dict[str, Any], meta: dict[str, Any]) -> str:
  rows = summary_rows(results)
  table = markdown_table(
    ["trials", "passed", "done when", "met", "median s/trial", "what each must show", "notes"],
    [
      [
        r["kind"],
        f"{r['passed']}/{r['total']}" + (f" ({r['skipped']} skipped)" if r["skipped"] else ""),
        f"≥{r['required']}",
        "**no**" if r["verdict"] == "no" else r["verdict"],
        f"{r['median_seconds']:.1f}",
        r["criterion"],
        r["notes"],
      ]
      for r in rows
    ],
  )
  failures = [
    f"- {r.kind} {r.index + 1}" + (f" ({_label(r)})" if _label(r) else "") + ": " + "; ".join(r.why)
    for r in results
    if r.failed
  ]
  skipped = [
    f"- {r.kind} {r.index + 1}" + (f" ({_label(r)})" if _label(r) else "") + f": {r.skipped}"
    for r in results
    if r.skipped
  ]
  sweep = info.get("sweep_reference")
  setup = info.get("setup", {})
  timeline = info.get("timeline", {})
  lines = [
    "# Fault campaign: runs that survive",
    "",
    meta["markdown"],
    "",
    "Every trial runs `python scripts/train.py --config "
    + setup.get("config", "?")
    + " --workdir W --no-progress "
    + " ".join(f"--config.{o}" for o in setup.get("overrides", ()))
    + "` (MNIST-1D written once to an `.npz`; each start reads a copy of a JAX compilation "
    + "cache the reference warmed) as a subprocess in its own session, pinned to one core, "
    + f"{info.get('workers', '?')} at a time; every moment and damage is drawn from seed "
    + f"{info.get('seed', '?')}.",
    "An uninterrupted reference run "
    + (
      f"(startup {timeline['first_write']:.1f} s, first save at {timeline['first_save']:.1f} s, "
      f"exit at {timeline['end']:.1f} s, {timeline['saves']} saves) "
      if timeline
      else ""
    )
    + "is what every resumed run must equal bitwise: summary.json's final test loss and "
    "accuracy, the final checkpoint's params, and train/loss at every step as TensorBoard's "
    "EventAccumulator reads it back (each step once). It ran twice (cold and warm cache) and "
    "agreed with itself bitwise.",
    *(
      [
        "The concurrent, storage and sweep_signals kinds run each of their named trials once "
        "(tools/reliability/concurrent_writers.py, storage_failures.py, sweep_signals.py). "
        "The sweep trials run `python scripts/sweep.py --sweep seed=0,1 --workers 1` with the "
        "same flags, and end bitwise where two uninterrupted sweeps end, which agreed with each "
        f"other bitwise ({sweep['seconds']:.1f} s each)."
      ]
      if sweep
      else []
    ),
    "",
    table,
    "",
    f"Campaign wall time: {info.get('wall_seconds', 0) / 60:.1f} min.",
    "",
    "## Failures",
    "",
    *(failures or ["None."]),
    "",
    *(["## Skipped", "", *skipped, ""] if skipped else []),
  ]
  return "\n".join(lines)


def _label(r: TrialResult) -> str:
  return r.details.get("damage") or r.details.get("name") or ""


def write_report(
  out: str, results: Sequence[TrialResult], info: dict[str, Any], argv: Sequence[str]
) -> tuple[str, str]:
  """OUT (markdown) and OUT with .json (meta, info, per-kind rows, every trial)."""
  meta = provenance(argv)
  json_path = os.path.splitext(out)[0] + ".json"
  write_text(out, render(results, info, meta))
  write_json(
    json_path,
    {
      "meta": {k: v for k, v in meta.items() if k != "markdown"},
      "info": info,
      "summary": summary_rows(results),
      "trials": [r.to_dict() for r in results],
    },
  )
  return out, json_path


def console_table(results: Sequence[TrialResult]) -> str:
  """The per-kind counts as the campaign prints them at the end."""
  lines = [f"{'trials':16s} {'passed':>9s}  {'met':7s}  {'median s':>8s}  notes"]
  for r in summary_rows(results):
    lines.append(
      f"{r['kind']:16s} {r['passed']:4d}/{r['total']:<4d}  {r['verdict']:7s}  "
      f"{r['median_seconds']:8.1f}  {r['notes']}"
    )
  return "\n".join(lines)
