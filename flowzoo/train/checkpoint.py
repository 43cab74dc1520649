"""Crash-safe checkpoints: ``out_dir/checkpoints/latest.pt`` plus periodic ``step-XXXXXXXX.pt``.

Every write goes through ``flowzoo.atomic`` (temp file, fsync, rename): a reader (or a resumed run)
sees the old file or the new one, never a torn one, whenever the writer is killed. Temp files left by
a killed writer are removed by ``clean_stale_temps``; nothing else reads them.

Checkpoints hold only tensors and plain python containers / numbers / strings, so they load with
``torch.load(weights_only=True)``: opening a checkpoint never runs pickled code.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

from flowzoo import atomic

LATEST = "latest.pt"
PERIODIC = re.compile(r"^step-(\d{8,})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used to resume this run; the message says what to do."""


def checkpoint_dir(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / "checkpoints"


def periodic_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save ``obj`` to ``path`` so that ``path`` is always either the old or the new file."""
    return atomic.atomic_write(path, lambda f: torch.save(obj, f))


def atomic_copy(src: Path, path: Path) -> Path:
    """Copy ``src`` over ``path`` atomically (same protocol as ``atomic_save``)."""

    def copy(fout) -> None:
        with open(src, "rb") as fin:
            shutil.copyfileobj(fin, fout, length=16 << 20)

    return atomic.atomic_write(path, copy)


def clean_stale_temps(directory: Path) -> list[Path]:
    """Remove temp files of interrupted writes (only ever called by the single writer, rank 0)."""
    removed = []
    if directory.is_dir():
        for p in directory.iterdir():
            if atomic.is_temp(p):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def periodic_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of the periodic checkpoints, oldest first."""
    found = []
    if directory.is_dir():
        for p in directory.iterdir():
            m = PERIODIC.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found)


def write_checkpoint(out_dir: str | os.PathLike, state: dict, step: int, periodic: bool, keep_last: int) -> Path:
    """Write latest.pt (and step-XXXXXXXX.pt when ``periodic``), then prune to ``keep_last`` periodic ones."""
    directory = checkpoint_dir(out_dir)
    latest = directory / LATEST
    if periodic and keep_last > 0:
        # Serialise once; latest.pt is an atomic copy of the periodic file.
        step_path = atomic_save(state, directory / periodic_name(step))
        atomic_copy(step_path, latest)
        for _, old in periodic_checkpoints(directory)[:-keep_last]:
            old.unlink(missing_ok=True)
    else:
        atomic_save(state, latest)
    return latest


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint without unpickling code (weights_only=True); one that loads but is not flowzoo's
    (no model, ema and step, e.g. a bare state_dict) is a CheckpointError too."""
    try:
        contents = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        # Only the error's kind: torch's weights-only message spans lines and suggests weights_only=False.
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is torn or not a flowzoo checkpoint ({type(exc).__name__}); "
            f"pass one of the run's step-*.pt, or run the same `flowzoo run` again to resume from the newest readable one."
        ) from exc
    if not (isinstance(contents, dict) and isinstance(contents.get("model"), dict)
            and isinstance(contents.get("ema"), list) and "step" in contents):
        raise CheckpointError(
            f"cannot read checkpoint {path}: it loads, but it is not a flowzoo checkpoint (no model, ema and step); "
            f"pass checkpoints/latest.pt or a step-*.pt written by `flowzoo run`.")
    return contents


def load_weights(net: torch.nn.Module, state_dict: dict, path: str | os.PathLike) -> None:
    """``net.load_state_dict(state_dict)``, or one sentence naming ``path`` when the weights are another
    network's (another backbone size, or a file put in the wrong run directory)."""
    try:
        net.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} holds weights of another network ({first_mismatch(exc)}); pass a checkpoint "
                              f"of this run, or the run directory it was trained in.") from None


def first_mismatch(exc: RuntimeError) -> str:
    """The first offending tensor of torch's load_state_dict error (one line of its many)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else "shapes differ").rstrip(".")


def set_aside(path: Path) -> Path:
    """Rename an unreadable checkpoint to NAME.corrupt-<UTC time> (never delete what a user may want to inspect)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.corrupt-{stamp}-{n}"), n + 1
    os.replace(path, target)
    return target


def load_resume_point(out_dir: str | os.PathLike, is_usable: Callable[[Any], bool], *, writer: bool,
                      say: Callable[[str], None]) -> tuple[Path, dict] | None:
    """The newest readable checkpoint of a run, loaded: latest.pt, else the periodic ones newest first.

    A file that does not load (torn, random bytes, not a flowzoo checkpoint) is skipped; the single
    ``writer`` (rank 0) sets it aside as NAME.corrupt-<time> so the next save does not mix with it, and
    ``say`` gets one line naming what was set aside and where the run resumes. None: nothing to resume.
    """
    directory = checkpoint_dir(out_dir)
    candidates = [directory / LATEST] + [p for _, p in reversed(periodic_checkpoints(directory))]
    unreadable = []
    for path in candidates:
        if not path.is_file():
            continue
        try:
            contents = load_checkpoint(path)
        except CheckpointError:
            contents = None
        if contents is not None and is_usable(contents):
            if unreadable:
                if writer and path.name != LATEST:  # latest.pt is again the newest readable state
                    atomic_copy(path, directory / LATEST)
                say(f"{', '.join(unreadable)} could not be read (torn, or not a checkpoint of this run's network); "
                    f"resuming from {path} (step {contents['step']}).")
            return path, contents
        unreadable.append(f"{path} (set aside as {set_aside(path).name})" if writer else str(path))
    if unreadable:
        say(f"{', '.join(unreadable)} could not be read (torn, or not a checkpoint of this run's network) and no "
            f"readable checkpoint is left; starting from step 0.")
    return None


def find_latest(out_dir: str | os.PathLike) -> Path | None:
    path = checkpoint_dir(out_dir) / LATEST
    return path if path.is_file() else None
