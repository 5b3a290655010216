"""What a run says while it trains: the progress bar, its postfix, and one line on a resume."""

from __future__ import annotations

from typing import Sequence


def progress_bar(enabled: bool, total: int, initial: int, name: str, members: int):
  """A tqdm bar over steps, starting where the run stands; disabled, it draws nothing."""
  from tqdm.auto import tqdm

  return tqdm(
    total=total,
    initial=initial,
    desc=(name or "train") + (f" x{members}" if members > 1 else ""),
    unit="step",
    disable=not enabled,
    dynamic_ncols=True,
    mininterval=0.5,
  )


def postfix(losses: Sequence[float], accuracies: Sequence[float | None]) -> str:
  """The live members' mean chunk losses and every member's last test accuracy (None before
  its first evaluation: then no accuracy is shown, rather than nan)."""
  known = [a for a in accuracies if a is not None]
  if len(losses) == 1:
    return f"loss={losses[0]:.3f}" + (f", test_acc={known[0]:.3f}" if known else "")
  text = f"{len(losses)} runs, loss {min(losses):.3f}..{max(losses):.3f}"
  return text + (f", test_acc {max(known):.3f} max" if known else "")


def start_line(workdirs: Sequence[str], step: int, num_steps: int) -> str | None:
  """One line saying the runs resume, and from which step, or that they are already finished;
  None for a fresh start (the bar, or the summary, says the rest)."""
  if step == 0:
    return None
  runs = workdirs[0] if len(workdirs) == 1 else f"{len(workdirs)} runs ({', '.join(workdirs)})"
  if step >= num_steps:
    return f"{runs}: finished at step {step} of {num_steps}; nothing to train"
  return f"resuming {runs} from step {step} of {num_steps}"
