"""Screenshots of TensorBoard over a logdir, taken in headless Chromium: what a researcher sees.

  python scripts/screenshot_dashboard.py --logdir runs/dash
  python scripts/screenshot_dashboard.py --logdir runs/dash --out results/dashboard

Starts `tensorboard --logdir LOGDIR` on 127.0.0.1 (a free port), opens each tab in headless
Chromium driven by Playwright, waits for the charts to draw, and writes OUT/time_series.png,
hparams.png, images.png, text.png and profile.png (the Profile tab on the earliest trace
session), then stops TensorBoard. Needs `pip install playwright` (the package only: it
drives the system Chromium, e.g. Debian's `chromium`, given by --chromium). OUT defaults to
runs/reports/dashboard.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

# tab -> (file, viewport width, viewport height)
TABS = {
  "timeseries": ("time_series.png", 1600, 1000),
  "hparams": ("hparams.png", 2300, 700),
  "images": ("images.png", 1600, 1100),
  "text": ("text.png", 1600, 1000),
  "profile": ("profile.png", 1600, 1000),
}
CHROMIUM_FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--enable-unsafe-swiftshader",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
]


def main() -> int:
  from research.cli import ArgumentParser, positive_float

  p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--logdir", required=True, help="the directory TensorBoard reads (e.g. runs/)")
  p.add_argument("--out", default="runs/reports/dashboard", help="directory for the PNGs")
  p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
  p.add_argument("--settle", type=positive_float, default=6.0, help="seconds to let each tab draw")
  args = p.parse_args()

  from research.outputs import check_output_dir
  from research.studies import StudyError

  # First: a file, a read-only directory or a run's own files at --out cost no browser start.
  check_output_dir(args.out, "--out", names=[name for name, _, _ in TABS.values()])
  if not os.path.isdir(args.logdir):
    raise StudyError(f"--logdir {args.logdir} is not a directory; give the runs' parent (runs/)")
  if not os.path.isfile(args.chromium):
    raise StudyError(
      f"no Chromium at {args.chromium}; install it (Debian: apt install chromium) or pass "
      "--chromium PATH"
    )
  try:
    from playwright.sync_api import sync_playwright
  except ImportError:
    raise StudyError("Playwright is not installed; pip install playwright") from None

  port = _free_port()
  server = subprocess.Popen(
    [sys.executable, "-m", "tensorboard.main", "--logdir", args.logdir]
    + ["--host", "127.0.0.1", "--port", str(port)],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  try:
    url = f"http://127.0.0.1:{port}/"
    _wait_until_serving(url, server)
    shots = {}
    with sync_playwright() as pw:
      browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
      for tab, (name, width, height) in TABS.items():
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(f"{url}#{tab}")
        page.wait_for_timeout(args.settle * 1000)
        if tab == "profile":
          _open_earliest_session(page, args.settle)
        shots[name] = page.screenshot()
        page.close()
      browser.close()
  finally:
    server.terminate()
    server.wait(timeout=30)
  os.makedirs(args.out, exist_ok=True)
  for name, png in shots.items():  # all taken before any is written
    with open(os.path.join(args.out, name), "wb") as f:
      f.write(png)
  print(f"wrote {', '.join(sorted(shots))} into {args.out}")
  return 0


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait_until_serving(url: str, server: subprocess.Popen, timeout: float = 60.0) -> None:
  from research.studies import StudyError

  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if server.poll() is not None:
      raise StudyError(f"tensorboard exited with status {server.returncode} before serving")
    try:
      urllib.request.urlopen(url, timeout=2).close()
      return
    except OSError:
      time.sleep(0.5)
  raise StudyError(f"tensorboard did not answer on {url} within {timeout:.0f} s")


def _open_earliest_session(page, settle: float) -> None:
  """The Profile tab opens the newest trace; pick the earliest (a run's training trace comes
  before the benchmark's) by its name, which is the capture time."""
  frame = next((f for f in page.frames if "/data/plugin/profile/" in f.url), None)
  if frame is None:  # no traces: the tab says so, and that is the screenshot
    return
  sessions = frame.locator("mat-select").first
  sessions.click()
  page.wait_for_timeout(1000)
  options = frame.locator("mat-option")
  names = [options.nth(i).inner_text() for i in range(options.count())]
  earliest = min(names, key=lambda name: name.rsplit("/", 1)[-1])  # <run>/<capture time>
  options.nth(names.index(earliest)).click()
  page.wait_for_timeout(settle * 1000)


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
