"""Clips: which frames (F at a fixed stride), how they are cropped, and which videos could not be read.

A clip is F frames at indices start, start + stride, ..., spanning (F - 1) * stride + 1 frames of the video.
Every frame gets ADM's centre crop (flowzoo.data.imagenet.folder.center_crop_arr: box-filter halving while
the short side is >= 2x the target, bicubic resize of the short side to the target, centre crop), the
same preprocessing as the ImageNet latents, applied per frame so a clip stays spatially aligned.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from flowzoo.data.imagenet.folder import center_crop_arr
from flowzoo.data.kinetics.decoders import Decoder

# Defaults. F = 16 is what FVD's I3D is evaluated on (FVD16, StyleGAN-V's protocol). StyleGAN-V takes
# consecutive frames; at Kinetics' 25-30 fps that is ~0.6 s, in which most actions barely move at 64 px,
# so we take every 2nd frame: 31 frames, ~1.2 s. The stride is part of the data: generated clips are
# compared with real clips drawn with the same stride, and the stride is recorded in the run config.
FRAMES, STRIDE, RESOLUTION = 16, 2, 64
# What FVD's real side is (its protocol records it): clips of the source videos, or VAE reconstructions of
# cached latents (a latent cache whose videos are gone). They are different references, never ranked together.
REAL_CLIPS, RECONSTRUCTIONS = "real clips", "VAE reconstructions"


@dataclass(frozen=True)
class ClipSpec:
    """F frames at stride s, cropped to resolution x resolution."""

    frames: int = FRAMES
    stride: int = STRIDE
    resolution: int = RESOLUTION

    def __post_init__(self):
        for key, low in (("frames", 1), ("stride", 1), ("resolution", 8)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"data.{key} must be an integer >= {low}, got {value!r}.")

    @property
    def span(self) -> int:
        """Frames of the video one clip covers."""
        return (self.frames - 1) * self.stride + 1

    def windows(self, n: int) -> int:
        """How many start positions a video of n frames offers (0: too short)."""
        return max(n - self.span + 1, 0)

    def train_start(self, n: int, u: float) -> int:
        """The start for a uniform draw u in [0, 1): every window equally likely."""
        return min(int(u * self.windows(n)), self.windows(n) - 1)

    def eval_start(self, n: int) -> int:
        """The centre window: evaluation clips never depend on a seed."""
        return (n - self.span) // 2

    def spread_starts(self, n: int, k: int) -> list[int]:
        """k windows at the centres of k equal parts of the video; k odd puts window k // 2 at eval_start."""
        return [((n - self.span) * (2 * j + 1)) // (2 * k) for j in range(k)]

    def indices(self, start: int) -> list[int]:
        return list(range(start, start + self.span, self.stride))


class TooShort(ValueError):
    pass


def crop_frames(frames: torch.Tensor, resolution: int) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (F, resolution, resolution, 3) uint8, centre crop per frame."""
    out = [center_crop_arr(Image.fromarray(f.numpy()), resolution) for f in frames]
    return torch.from_numpy(np.stack(out)) if out else torch.zeros(0, resolution, resolution, 3, dtype=torch.uint8)


class ClipReader:
    """Reads clips with a decoder; records every video it had to skip, with the reason.

    Determinism: a clip's outcome must depend only on the file and the requested window, never on what
    was read before, or a resumed run would draw other batches than an uninterrupted one. So only
    failures that do not depend on the window (the file cannot be opened, or is shorter than one clip)
    mark a video unusable for good; a decode error inside a window fails that read only (the caller
    falls back), and the video is still listed in `skipped`.
    """

    def __init__(self, decoder: Decoder, spec: ClipSpec, cache_frames: bool = False, warn: bool = True):
        self.decoder, self.spec, self.cache_frames, self.warn = decoder, spec, cache_frames, warn
        self.skipped: dict[str, str] = {}  # video -> why it was skipped (missing, unreadable, too short)
        self._unusable: set[str] = set()
        self._frames: dict[str, torch.Tensor] = {}  # cache_frames: every cropped frame of a video
        self._lock = threading.Lock()

    def skip(self, video: str, reason: str, unusable: bool = True, quiet: bool = False) -> None:
        with self._lock:
            new = video not in self.skipped
            self.skipped.setdefault(video, reason)
            if unusable:
                self._unusable.add(video)
            count = len(self.skipped)
        if new and self.warn and not quiet:
            warnings.warn(f"kinetics700: skipping {video} ({reason}); {count} video(s) skipped so far.", stacklevel=3)

    def read(self, path: str | Path, starts: Callable[[int], list[int]]) -> torch.Tensor | None:
        """(K, F, r, r, 3) uint8 for the windows starts(num_frames) (sorted or not), or None if it cannot."""
        key = str(path)
        if key in self._unusable:
            return None
        if self.cache_frames:
            return self._read_cached(key, starts)
        plan: dict = {}  # filled once the file is open and counted: separates open errors from decode errors

        def pick(n: int) -> list[int]:
            plan["starts"] = starts(n)
            if self.spec.windows(n) == 0:
                raise TooShort(f"too short: {n} frames < {self.spec.span}")
            plan["wanted"] = sorted({i for s in plan["starts"] for i in self.spec.indices(s)})
            return plan["wanted"]

        try:
            frames = self.decoder.read_clip(path, pick)
        except TooShort as exc:
            self.skip(key, str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 (PyAV, decord and FFmpeg raise many types for broken files)
            self.skip(key, _reason(exc, key), unusable=not plan)
            return None
        row = {i: r for r, i in enumerate(plan["wanted"])}
        crops = crop_frames(frames, self.spec.resolution)
        return torch.stack([crops[[row[i] for i in self.spec.indices(s)]] for s in plan["starts"]])

    def _read_cached(self, key: str, starts: Callable[[int], list[int]]) -> torch.Tensor | None:
        frames = self._frames.get(key)
        if frames is None:
            try:
                n = self.decoder.num_frames(key)
                if self.spec.windows(n) == 0:
                    raise TooShort(f"too short: {n} frames < {self.spec.span}")
                frames = crop_frames(self.decoder.read_frames(key, range(n)), self.spec.resolution)
            except TooShort as exc:
                self.skip(key, str(exc))
                return None
            except Exception as exc:  # noqa: BLE001 (whole-file decode: the outcome never depends on a window)
                self.skip(key, _reason(exc, key))
                return None
            self._frames[key] = frames
        return torch.stack([frames[self.spec.indices(s)] for s in starts(len(frames))])


def _reason(exc: Exception, path: str) -> str:
    first = str(exc).splitlines()[0] if str(exc).strip() else ""
    first = first.replace(f": '{path}'", "").replace(f" {path}", "")[:160]  # the warning names the file already
    return f"unreadable: {type(exc).__name__}{': ' + first if first else ''}"


def to_unit(clips: torch.Tensor) -> torch.Tensor:
    """(B, F, H, W, 3) uint8 -> (B, 3, F, H, W) float32 in [-1, 1] (channels first, then time)."""
    return clips.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, F, H, W) in [-1, 1] -> uint8 of the same layout."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def display_frames(x: torch.Tensor, videos: int = 8, per_row: int = 8) -> torch.Tensor:
    """(N, 3, F, H, W) -> (videos * per_row, 3, H, W): one row of evenly spaced frames per video, for
    sample grids written with nrow = per_row."""
    x = x[:videos]
    t = torch.linspace(0, x.shape[2] - 1, per_row).round().long()
    return x[:, :, t].permute(0, 2, 1, 3, 4).reshape(-1, *x.shape[1:2], *x.shape[3:])
