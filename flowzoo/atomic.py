"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never a torn one.

The protocol: write a temp file in the same folder, flush and fsync it, ``os.replace`` it over the
destination, fsync the folder. Temp files of a killed writer start with "." and contain ".tmp-<pid>";
``remove_stale_temps`` clears those of writers that are gone. Checkpoints, configs, result records,
samples, figures and leaderboard pages all go through ``atomic_write``.

An OSError from a write names the destination (not the temp file) and carries ``atomic = True``: the
file that was there before is unchanged, which the CLI may then say.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

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
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename in (None, str(tmp)):  # e.g. a full disk on f.write names no file: name the destination
            exc = OSError(exc.errno, exc.strerror or str(exc), str(path))
        exc.atomic = True  # what was at `path` before is unchanged
        raise exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: a process of another user holds that pid
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike, names: Iterable[str] | None = None) -> list[Path]:
    """Delete the temp files a killed writer left in ``folder`` (its pid no longer runs); return them.

    ``names``: only the temp files of these destinations (in a folder flowzoo shares with the user's files)."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    wanted = None if names is None else {f".{name}" for name in names}
    for candidate in folder.glob(".*.tmp-*"):
        head, _, pid = candidate.name.rpartition(".tmp-")
        if wanted is not None and head not in wanted:
            continue
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)) or not candidate.is_file():
            continue
        try:
            candidate.unlink()
        except OSError:
            continue  # e.g. a read-only folder: a leftover is untidy, not a reason to fail
        removed.append(candidate)
    return removed


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
