"""JSON-lines logs written one short line at a time (metrics, training curves, gradient cosines).

A kill can tear at most the last line, so readers skip lines that do not parse (or whose step is not a
whole finite number); a resumed run appends lines for steps it logged before the kill, so readers keep
the last line per step.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

from flowzoo import fault_hook


def append_line(path: Path, entry: dict[str, Any]) -> None:
    line = (json.dumps(entry) + "\n").encode()
    with named_errors(path), open(path, "ab") as handle:
        fault_hook.mid_write(Path(path), handle, line)  # tests only: a torn last line or a full disk
        handle.write(line)


@contextlib.contextmanager
def named_errors(path: str | os.PathLike) -> Iterator[None]:
    """An OSError inside names ``path`` (a full disk on write() names no file, and "a file" helps no one)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def line_step(raw: bytes | str) -> tuple[int, dict[str, Any]] | None:
    """(step, entry) of one line, or None for a line that is torn, not UTF-8 JSON, or whose "step" is not a
    whole finite number (``{"step": 1e999}`` reads as infinity)."""
    try:
        entry = json.loads(raw)
        step = entry["step"]
    except (ValueError, KeyError, TypeError, IndexError):  # UnicodeDecodeError is a ValueError
        return None
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step) or step != int(step):
        return None
    return int(step), entry


def read_by_step(path: Path) -> list[dict[str, Any]]:
    """The last readable line per "step", in step order ([] when the file does not exist)."""
    by_step: dict[int, dict[str, Any]] = {}
    if Path(path).is_file():
        for raw in Path(path).read_bytes().splitlines():
            parsed = line_step(raw)
            if parsed is not None:
                by_step[parsed[0]] = parsed[1]
    return [by_step[k] for k in sorted(by_step)]
