"""Fault injection against the real scripts: do runs survive kill -9, SIGTERM, Ctrl-C, damaged
checkpoints, bad input, two processes, two writers on one workdir, failing storage and signals
to a sweep? One invocation, one report.

  python scripts/fault_campaign.py                         # everything, 20 trials per kind
  python scripts/fault_campaign.py --quick                 # a few of each (CI)
  python scripts/fault_campaign.py --kinds kill9,sigterm --trials 5 --keep
  python scripts/fault_campaign.py --kinds concurrent,storage,sweep_signals
  python scripts/fault_campaign.py --out results/reliability.md   # the committed report

Each trial runs scripts/train.py (or sweep.py, infer.py, or the script a bad input targets) as a
subprocess, interrupts or damages it at a moment drawn from --seed, re-runs the same command and
compares the end bitwise with an uninterrupted reference run (tools/reliability/). The kinds:

  kill9, sigterm, sigint   the signal at random moments (startup, training, mid-save); resumed
  damaged                  each kind of checkpoint damage; inference and the resume judged
  bad_inputs               one mistake per case: one `error:` line, exit 1, nothing written
  two_process              two --distributed processes on loopback; one killed; resumed
  concurrent               two train.py or sweep.py on one workdir, a failed start beside
                           another process's files, a lock left by kill -9
  storage                  checkpoints/ read-only mid-run, a full disk, `checkpoints` a file
                           (the first two mount, so need root: skipped otherwise, not passed)
  sweep_signals            SIGTERM/SIGINT/SIGHUP to a sweep's parent, Ctrl-C, kill -9 of a
                           worker or of the parent; the re-run sweep ends bitwise

Prints one line per trial and the counts per kind; writes OUT (markdown) and OUT's .json (every
trial). Exit status 0 only when no trial failed (a skipped one is reported, not failed).
"""

from __future__ import annotations

import argparse
import sys

KINDS = (
  "kill9",
  "sigterm",
  "sigint",
  "damaged",
  "bad_inputs",
  "two_process",
  "concurrent",
  "storage",
  "sweep_signals",
)


def main() -> int:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    "--out",
    default="runs/reports/reliability.md",
    help="the report (markdown); the per-trial JSON goes beside it (default: %(default)s)",
  )
  parser.add_argument(
    "--trials",
    type=int,
    default=None,
    help="trials per signal kind (kill9, sigterm, sigint; SIGTERM in startup gets a quarter); "
    "default 20, with --quick 2. Damaged runs one trial per kind of damage; concurrent, storage "
    "and sweep_signals one per named trial.",
  )
  parser.add_argument(
    "--kinds",
    default=",".join(KINDS),
    help=f"comma-separated, from {', '.join(KINDS)} (default: all)",
  )
  parser.add_argument("--seed", type=int, default=0, help="draws every moment and damage")
  parser.add_argument(
    "--quick",
    action="store_true",
    help="a few of each: 2 per signal kind, 2 kinds of damage, 6 bad inputs, 2 concurrent, "
    "2 storage and 2 sweep_signals trials",
  )
  parser.add_argument("--keep", action="store_true", help="keep every trial's directory")
  parser.add_argument("--scratch", default=None, help="where the campaign directory goes (tmp)")
  parser.add_argument("--workers", type=int, default=2, help="trials at a time (one core each)")
  args = parser.parse_args()
  kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
  unknown = [k for k in kinds if k not in KINDS]
  if unknown or not kinds:
    parser.error(f"--kinds {args.kinds!r}: choose from {', '.join(KINDS)}")
  trials = args.trials if args.trials is not None else (2 if args.quick else 20)
  if trials < 1:
    parser.error("--trials must be at least 1")
  if args.workers < 1:
    parser.error("--workers must be at least 1")

  from research.outputs import check_output_file

  check_output_file(args.out, "--out", (".md",))

  from tools.reliability.campaign import CampaignError, run_campaign
  from tools.reliability.report import console_table, write_report

  try:
    results, info = run_campaign(
      kinds, trials, args.seed, args.quick, args.scratch, args.keep, args.workers
    )
  except CampaignError as e:  # no reference to judge against: nothing was tested
    print(f"error: {e}", file=sys.stderr)
    return 1
  md, js = write_report(args.out, results, info, sys.argv)
  print()
  print(console_table(results))
  failed = [r for r in results if r.failed]
  skipped = sum(bool(r.skipped) for r in results)
  print(
    f"{sum(r.ok for r in results)}/{len(results)} trials passed"
    + (f" ({skipped} skipped)" if skipped else "")
    + f" in {info['wall_seconds'] / 60:.1f} min; report {md}, trials {js}"
  )
  if "campaign_dir" in info:
    print(f"trial directories kept in {info['campaign_dir']}")
  return 1 if failed else 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
