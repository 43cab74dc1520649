"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never a torn one.

The protocol: write a temp file in the same folder, flush and fsync it, ``os.replace`` it over the
destination, fsync the folder. Temp files of a killed writer start with "." and contain ".tmp-".
Checkpoints, configs and result records all go through ``atomic_write``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

from flowzoo import fault_hook


def fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows), hence best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace(tmp: Path, path: Path) -> None:
    """The commit point of an atomic write (a seam the crash tests patch to pause here)."""
    os.replace(tmp, path)


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def is_temp(path: Path) -> bool:
    return path.name.startswith(".") and ".tmp-" in path.name


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temp file, then move it over ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            fault_hook.mid_write(path, f)  # tests only: die or hit a full disk here, before the rename
            f.flush()
            os.fsync(f.fileno())
        replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str | os.PathLike, data: Any, indent: int = 2) -> Path:
    """JSON (numpy/torch arrays as lists, paths as strings), written atomically."""
    return atomic_write_text(path, json.dumps(data, indent=indent, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
