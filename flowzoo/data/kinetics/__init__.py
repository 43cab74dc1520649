"""Kinetics-700: class-conditional video clips, from the videos (PyAV or decord) or from an SD-VAE latent cache.

`kinetics700` (registered in DATASETS) picks the source from data.path: a folder written by
`flowzoo prepare kinetics700` gives KineticsLatents (4, F, R/8, R/8); anything else is read as the
Kinetics root of videos, giving KineticsClips (3, F, R, R) in [-1, 1]. See docs/kinetics.md.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from flowzoo.data.kinetics.annotations import COLUMNS, Clip, class_names, find_annotations, locate_videos, read_annotations
from flowzoo.data.kinetics.clips import FRAMES, RESOLUTION, STRIDE, ClipReader, ClipSpec
from flowzoo.data.kinetics.dataset import ClipStream, KineticsClips
from flowzoo.data.kinetics.decoders import DECODERS, get_decoder
from flowzoo.data.kinetics.latents import KineticsLatents, open_video_cache
from flowzoo.data.kinetics.prepare import FORMAT, is_video_cache, prepare_video_latents
from flowzoo.registry import DATASETS

__all__ = ["kinetics700", "kinetics_data_dir", "KineticsClips", "KineticsLatents", "ClipStream", "ClipSpec", "ClipReader",
           "Clip", "COLUMNS", "read_annotations", "class_names", "find_annotations", "locate_videos", "DECODERS",
           "get_decoder", "FORMAT", "is_video_cache", "open_video_cache", "prepare_video_latents"]


@DATASETS.register("kinetics700")
def kinetics700(path: str | None = None, annotations: str | list | None = None, split: str | None = None,
                frames: int | None = None, stride: int | None = None, resolution: int | None = None,
                decoder: str = "pyav", workers: int | None = None, prefetch: bool = True, cache_frames: bool = False,
                normalize: str = "sd", vae: str | None = None, fvd: dict | None = None, **unknown):
    """Kinetics-700 class-conditional clips: videos -> (3, F, R, R) in [-1, 1], or a prepared latent cache -> (4, F, R/8, R/8).

    frames, stride, resolution and split default to 16, 2, 64 and train for videos, and to the cache's own
    values for a cache (where a different explicit value is an error, not a silent re-interpretation).
    decoder, workers, prefetch and cache_frames concern decoding videos; normalize and vae concern latents.
    """
    if unknown:  # a typo in the config would otherwise be a TypeError traceback
        valid = [p for p in inspect.signature(kinetics700).parameters if p != "unknown"]
        raise ValueError(f"unknown key(s) {', '.join('data.' + k for k in sorted(unknown))} for kinetics700; valid: {', '.join(valid)}.")
    if path is not None and is_video_cache(path):
        return KineticsLatents(path, normalize=normalize, split=split, frames=frames, stride=stride, resolution=resolution,
                               vae=vae, fvd=fvd, decoder=decoder, workers=workers)
    pick = lambda value, default: default if value is None else value  # noqa: E731 (0 must stay 0 and be refused)
    return KineticsClips(path, annotations, pick(split, "train"), pick(frames, FRAMES), pick(stride, STRIDE), pick(resolution, RESOLUTION),
                         decoder=decoder, workers=workers, prefetch=prefetch, cache_frames=cache_frames, fvd=fvd)


def kinetics_data_dir(value: str) -> str | None:
    """For `--data DIR`: 'kinetics700' if DIR is a video latent cache or a Kinetics root (annotations/train.csv
    or train.csv inside), else None. config.latent_cache_data asks this before its ImageNet rule."""
    path = Path(value).expanduser()
    if not path.is_dir():
        return None
    return "kinetics700" if is_video_cache(path) or find_annotations(path, "train") else None
