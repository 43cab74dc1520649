"""Ctrl-C (SIGINT) or SIGTERM during training: finish the step, write a checkpoint, then stop.

Inside ``stop_at_step_boundary()`` the first signal only sets ``requested``; the loop checks it after
each optimizer step, checkpoints, and raises TrainingInterrupted (the CLI prints its one sentence and
exits 130). A second signal acts at once (the default handler is back), for a user who cannot wait.
Single-process runs only: under torchrun the ranks would see the signal at different steps, so there
the default handling (and the last periodic checkpoint) stays.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class TrainingInterrupted(KeyboardInterrupt):
    """A signal stopped training at a step boundary after a checkpoint; the message says how to resume."""


class StopRequest:
    def __init__(self) -> None:
        self.requested: str | None = None


@contextlib.contextmanager
def stop_at_step_boundary(enabled: bool = True) -> Iterator[StopRequest]:
    request = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame) -> None:
        request.requested = signal.Signals(signum).name
        for sig, old in previous.items():
            signal.signal(sig, old)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
