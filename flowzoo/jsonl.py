"""JSON-lines logs written one short line at a time (metrics, training curves, gradient cosines).

A kill can tear at most the last line, so readers skip lines that do not parse; a resumed run appends
lines for steps it logged before the kill, so readers keep the last line per step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowzoo import fault_hook


def append_line(path: Path, entry: dict[str, Any]) -> None:
    line = (json.dumps(entry) + "\n").encode()
    with open(path, "ab") as handle:
        fault_hook.mid_write(Path(path), handle, line)  # tests only: a torn last line or a full disk
        handle.write(line)


def read_by_step(path: Path) -> list[dict[str, Any]]:
    """The last readable line per "step", in step order ([] when the file does not exist)."""
    by_step: dict[int, dict[str, Any]] = {}
    if Path(path).is_file():
        for raw in Path(path).read_text().splitlines():
            try:
                line = json.loads(raw)
                by_step[int(line["step"])] = line
            except (ValueError, KeyError, TypeError):
                continue
    return [by_step[k] for k in sorted(by_step)]
