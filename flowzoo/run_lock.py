"""One writer per folder: an exclusive ``fcntl.flock`` on FOLDER/.flowzoo.lock while a run (or a cache build) writes.

The lock belongs to the open file, so the kernel drops it when the process exits in any way (SIGKILL,
OOM, power loss of the process); a lock left by a killed run never blocks the next one. The lock file
itself stays (removing it would let a third process lock a file the second already opened); it holds
the pid of the current holder, only to name it in the refusal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".flowzoo.lock"


class FolderBusy(ValueError):
    """Another live process holds the folder; the message is one sentence (the CLI exits 2)."""


@contextlib.contextmanager
def hold(folder: str | os.PathLike, what: str = "run directory") -> Iterator[Path]:
    """Hold FOLDER exclusively for the ``with`` body, or raise FolderBusy at once (never wait)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise FolderBusy(f"the {what} {folder} is in use by process {holder}; wait for it to finish "
                             f"(or stop it) and run the same command again, or pass a different --out.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def is_main_process() -> bool:
    """Rank 0 under torchrun (or a plain process): the one process of a run that takes the lock.

    A RANK left in the environment without a world of several processes (WORLD_SIZE unset or 1) is a
    plain process: training treats it as rank 0 (train/distributed.py), so it must hold the lock too."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world_size = 1
    return world_size <= 1 or os.environ.get("RANK", "0").strip() == "0"
