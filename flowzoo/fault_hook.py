"""A test seam on every write flowzoo makes: FLOWZOO_FAULT makes the n-th matching write fail on purpose.

    FLOWZOO_FAULT="<path glob>:<n>:<action>"     e.g. "*.pt:3:kill", "*/result.json:1:enospc"

``kill``: the process SIGKILLs itself half way through the write (half the bytes are in the temp file or,
for a JSON-lines append, on the last line), the worst moment for a crash; deterministic, so the fault
suite never races on timing. ``pause``: print "FLOWZOO_FAULT paused" on stderr and wait for a signal
(the test acts on the paused process, e.g. a second run on its folder, then signals it). ``enospc``: the write raises OSError(ENOSPC), as on a full disk. Unset (as
always outside the tests) the hook costs one environment lookup per write.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import signal
import sys
from pathlib import Path

ENV = "FLOWZOO_FAULT"
_seen: dict[str, int] = {}


ACTIONS = ("kill", "pause", "enospc")


def parse(spec: str) -> tuple[str, int, str]:
    """(path glob, n, action) of a FLOWZOO_FAULT value; anything else is one sentence (a ValueError)."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or int(parts[1]) < 1 or parts[2] not in ACTIONS:
        raise ValueError(f"{ENV}={spec!r} is not '<path glob>:<n>:<action>' (n from 1, action one of "
                         f"{', '.join(ACTIONS)}; e.g. '*.pt:3:kill'); unset {ENV} outside the fault tests.")
    return parts[0], int(parts[1]), parts[2]


def _armed(path: Path) -> str | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    pattern, n, action = parse(spec)
    if not fnmatch.fnmatch(str(path), pattern):
        return None
    _seen[spec] = _seen.get(spec, 0) + 1
    return action if _seen[spec] == n else None


def mid_write(path: Path, handle, data: bytes | str | None = None) -> None:
    """Called by a writer of ``path`` once ``handle`` is open, before the bytes ``data`` (if given) go in."""
    action = _armed(Path(path))
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    if action == "pause":
        print(f"FLOWZOO_FAULT paused writing {path}", file=sys.stderr, flush=True)
        signal.pause()  # returns once a handler (e.g. training's SIGINT handler) has run
    if action == "kill":
        if data is not None:
            handle.write(data[: max(1, len(data) // 2)])
        handle.flush()
        os.fsync(handle.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
