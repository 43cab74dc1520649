"""Training progress for a person watching: a rich bar on a terminal, plain lines elsewhere.

On a TTY a rich progress bar shows step, loss, alpha, fm_ratio, steps/s and the ETA. When stdout is
not a terminal (CI, a log file, ``nohup``) it degrades to one plain line at most every
``min_interval_s`` seconds (and a last one at the end), so logs stay readable and small. ``quiet``
silences both; metrics.jsonl is the record either way.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

# "mse" is the unweighted squared error (per-element mean), on one scale for the whole run; the weighted
# "loss" is not: an adaptive weight w = 1/(||Delta||^2 + c) keeps it near 1 and rescales it when alpha
# reaches 0 (e.g. 0.50 -> 0.995), so the line leads with mse and names the other "weighted loss".
SHOWN = ("mse", "loss", "alpha", "fm_ratio")
LABELS = {"loss": "weighted loss"}


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):  # nan / inf: no estimate yet
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def format_stats(stats: dict[str, float]) -> str:
    parts = [f"{LABELS.get(k, k)} {stats[k]:.4g}" for k in SHOWN if k in stats]
    if "steps_per_s" in stats:
        parts.append(f"{stats['steps_per_s']:.3g} steps/s")
    return "  ".join(parts)


class TrainProgress:
    """``advance(step)`` every step (cheap, no device sync); ``report(step, stats)`` at log steps."""

    def __init__(self, total: int, start: int = 0, quiet: bool = False, stream: TextIO | None = None,
                 interactive: bool | None = None, min_interval_s: float = 10.0):
        self.total, self.start, self.quiet = total, start, quiet
        self.stream = stream if stream is not None else sys.stdout
        self.min_interval_s = min_interval_s
        self._last_line = -float("inf")
        self._last_step = start
        self._bar = None
        if quiet:
            return
        if interactive is None:
            interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        if interactive:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                BarColumn(bar_width=20), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(file=self.stream), transient=False,
            )
            self._task = self._bar.add_task("train", total=total, completed=start, stats="")
            self._bar.start()

    def advance(self, step: int) -> None:
        self._last_step = step
        if self._bar is not None:
            self._bar.update(self._task, completed=step)

    def report(self, step: int, stats: dict[str, float], final: bool = False) -> None:
        self._last_step = step
        if self.quiet:
            return
        text = format_stats(stats)
        if self._bar is not None:
            self._bar.update(self._task, completed=step, stats=text)
            return
        now = time.monotonic()
        if not final and now - self._last_line < self.min_interval_s:
            return
        self._last_line = now
        rate = stats.get("steps_per_s", 0.0)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        pct = 100.0 * step / max(self.total, 1)
        print(f"step {step}/{self.total} ({pct:.1f}%)  {text}  ETA {format_duration(eta)}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """One line that must not be rate-limited away (e.g. the objective switching branch)."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def __enter__(self) -> "TrainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
