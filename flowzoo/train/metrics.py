"""metrics.jsonl: one JSON object per log step, appended and flushed as it is written.

``MetricWindow`` sums the objective's metric tensors on the device between log steps, so logging
costs no host sync per step; ``MetricsLog`` writes the averages. On resume, lines beyond the
checkpoint's step (written by the killed run after its last checkpoint) are dropped, so the file
reads as one run and each step appears once.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from flowzoo import fault_hook
from flowzoo.jsonl import line_step, named_errors

from flowzoo.train import distributed
from flowzoo.train.distributed import DistEnv


class MetricWindow:
    """Running sums of scalar metrics over the steps taken since the last log line."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            value = torch.as_tensor(value).detach().to(self.device, torch.float32).reshape(())
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.count += 1

    def means(self, env: DistEnv) -> dict[str, float]:
        """Averages over the window and over ranks (a collective: every rank calls it), then reset."""
        if self.count == 0:
            return {}
        keys = sorted(self.sums)  # same order on every rank for the all-reduce
        values = torch.stack([self.sums[k] for k in keys]) / self.count
        values = distributed.mean_over_ranks(values, env)
        self.sums, self.count = {}, 0
        return dict(zip(keys, values.tolist()))


class MetricsLog:
    """Appends records to ``path``; a context manager. ``enabled=False`` (ranks other than 0) writes nothing."""

    def __init__(self, path: str | os.PathLike, resume_step: int = 0, enabled: bool = True):
        self.path = Path(path)
        self._file = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._truncate_after(resume_step)
        self._file = open(self.path, "a", encoding="utf-8")

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _truncate_after(self, step: int) -> None:
        kept, unreadable = [], []
        data = self.path.read_bytes()
        lines = data.splitlines()
        for number, raw in enumerate(lines, 1):
            parsed = line_step(raw)
            if parsed is None:  # torn by a kill mid-write, binary junk, or a step like 1e999
                torn = number == len(lines) and not data.endswith(b"\n")  # routine after a kill: no note
                if raw.strip() and not torn:
                    unreadable.append(number)
            elif parsed[0] <= step:
                kept.append(raw.decode(errors="replace"))
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        with named_errors(self.path):
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            if unreadable:  # the file as it was stays beside the cleaned one (a hard link: no copy, no window)
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                aside = self.path.with_name(f"{self.path.name}.unreadable-{stamp}")
                try:
                    os.link(self.path, aside)
                except FileExistsError:
                    pass
                except OSError:
                    shutil.copy2(self.path, aside)
                shown = ", ".join(map(str, unreadable[:5])) + (", ..." if len(unreadable) > 5 else "")
                print(f"{self.path}: line {shown} unreadable and left out (the file as it was is kept as "
                      f"{aside.name}); resuming at step {step}.", file=sys.stderr)
            os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            line = json.dumps(record) + "\n"
            with named_errors(self.path):
                fault_hook.mid_write(self.path, self._file, line)  # tests only: a torn last line or a full disk
                self._file.write(line)
                self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
