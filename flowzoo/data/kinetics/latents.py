"""Kinetics-700 as per-frame SD-VAE latents (4, F, R/8, R/8) from a cache `flowzoo prepare kinetics700` wrote.

As for ImageNet (flowzoo.data.imagenet.dataset): every read draws a fresh posterior sample mean + std * eps,
eps seeded by the batch's position (imagenet's LatentStream, reused), then normalises with
    normalize="sd"           x * 0.18215
    normalize="per_channel"  (x - mean_c) / std_c with the statistics prepare recorded.
An item is (video, clip k) of the K clips prepare stored per video, so training walks every window;
`reference` takes clip K // 2, the centre window, like the video dataset.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowzoo.data.imagenet.dataset import NORMALIZATIONS, LatentStream, PosteriorShards
from flowzoo.data.imagenet.vae import decode, load_vae
from flowzoo.data.kinetics.clips import REAL_CLIPS, RECONSTRUCTIONS, ClipSpec, display_frames
from flowzoo.data.kinetics.prepare import FORMAT, read_manifest
from flowzoo.data.stream import REFERENCE, generator


def open_video_cache(path: str | Path) -> dict[str, Any]:
    """The manifest of a finished video latent cache, or ValueError with one sentence saying what to do."""
    manifest = read_manifest(path) if Path(path).is_dir() else None
    if manifest is None or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a flowzoo video latent cache; build one with `flowzoo prepare kinetics700 --data KINETICS_ROOT --vae VAE --out {path}`.")
    if not manifest.get("complete"):
        raise ValueError(f"the video latent cache {path} is unfinished; run the same `flowzoo prepare kinetics700` command again to complete it.")
    return manifest


class KineticsLatents(PosteriorShards):
    """Kinetics-700 clips as normalised per-frame SD-VAE latents from a prepared cache."""

    name = "kinetics700"

    def __init__(self, path: str | Path, normalize: str = "sd", split: str | None = None, frames: int | None = None,
                 stride: int | None = None, resolution: int | None = None, vae: str | None = None, fvd: dict | None = None,
                 decoder: str = "pyav", workers: int | None = None):
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"data.normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}.")
        self.path, self.manifest = Path(path), open_video_cache(path)
        m = self.manifest
        for key, asked in (("split", split), ("frames", frames), ("stride", stride), ("resolution", resolution)):
            if asked is not None and asked != m[key]:  # a silent mismatch would train on other clips than asked
                raise ValueError(f"the cache {path} holds {key}={m[key]} but data.{key}={asked} was asked; drop data.{key} or prepare a new cache with it.")
        self.normalize, self.vae_source, self.fvd = normalize, vae or m["vae"], dict(fvd or {})
        self.decoder_name, self.workers = decoder, workers
        self.classes, self.num_classes = m["classes"], len(m["classes"])
        self.clips_per_video, h = m["clips_per_video"], m["resolution"] // 8
        self.per_row = self.clips_per_video  # item = video * K + clip
        self.sample_shape = (4, m["frames"], h, h)
        self.spec = ClipSpec(m["frames"], m["stride"], m["resolution"])  # the clips the latents were made from
        self._shards = [np.load(self.path / f"{s['name']}.latents.npy", mmap_mode="r") for s in m["shards"]]
        labels = [np.load(self.path / f"{s['name']}.labels.npy") for s in m["shards"]]
        self.labels = torch.from_numpy(np.concatenate(labels)) if labels else torch.zeros(0, dtype=torch.long)
        self._offsets = np.cumsum([0] + [len(s) for s in self._shards])
        if self._offsets[-1] == 0:
            raise ValueError(f"the cache {path} holds no clips (every video was skipped; see its manifest.json).")
        stats = m.get("channel_stats") or {"mean": [0.0] * 4, "std": [1.0] * 4}
        self._mean = torch.tensor(stats["mean"], dtype=torch.float32).view(1, 4, 1, 1, 1)
        self._std = torch.tensor(stats["std"], dtype=torch.float32).view(1, 4, 1, 1, 1)
        self._vae = None

    @property
    def videos(self) -> int:
        return int(self._offsets[-1])

    @property
    def skipped(self) -> dict[str, str]:
        return dict(line.split(": ", 1) for line in self.manifest["skipped"])

    def __len__(self) -> int:
        return self.videos * self.clips_per_video

    def stream(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> LatentStream:
        return LatentStream(self, batch_size, seed, rank, world_size)

    def _reference_videos(self, n: int, seed: int) -> torch.Tensor:
        return torch.randperm(self.videos, generator=generator(REFERENCE, seed))[torch.arange(n) % self.videos]

    def reference(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """n normalised posterior samples of centre clips of a seeded choice of videos (cycling if n > videos)."""
        idx = self._reference_videos(n, seed) * self.clips_per_video + self.clips_per_video // 2
        return self.read(idx, generator(REFERENCE, seed, 1))

    # -- pixels -----------------------------------------------------------------------------------------
    def vae(self, device: str | torch.device | None = None):
        if self._vae is None:
            self._vae = load_vae(self.vae_source, device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return self._vae

    def decode_video(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(N, 3, F, H, W) uint8 from normalised latents (N, 4, F, h, w), decoded frame by frame."""
        z = self.denormalise(x.float().cpu())
        n, c, f, h, w = z.shape
        frames = decode(self.vae(), z.permute(0, 2, 1, 3, 4).reshape(n * f, c, h, w), batch_size)
        return frames.reshape(n, f, *frames.shape[1:]).permute(0, 2, 1, 3, 4)

    def reference_kind(self) -> str:
        """What reference_video returns now: the source videos' clips, or (videos gone) VAE reconstructions.
        FVD records it: the two are different references and are never ranked together."""
        return REAL_CLIPS if Path(self.manifest["data"]).is_dir() else RECONSTRUCTIONS

    def reference_video(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, F, H, W) uint8 real clips: centre windows decoded from the videos the cache was made from,
        where they still are; else (with a warning) the VAE reconstructions of the cached centre clips."""
        from flowzoo.data.kinetics.dataset import KineticsClips

        m = self.manifest
        if self.reference_kind() == REAL_CLIPS:
            clips = KineticsClips(m["data"], m.get("annotations"), m["split"], m["frames"], m["stride"], m["resolution"],
                                  decoder=self.decoder_name, workers=self.workers, prefetch=False)
            return clips.reference_video(n, seed)
        warnings.warn(f"kinetics700: the videos at {m['data']} are gone; real clips for FVD are the VAE reconstructions of the cached centre clips.", stacklevel=2)
        idx = self._reference_videos(n, seed) * self.clips_per_video + self.clips_per_video // 2
        mean, _, y = self.posterior(idx)
        return self.decode_video(self.normalise(mean)), y

    def decode_for_display(self, x: torch.Tensor) -> torch.Tensor:
        """8 frames of each of the first 8 clips, (64, 3, H, W) in [-1, 1]: one video per row of an 8-wide grid."""
        return display_frames(self.decode_video(x[:8]).float() / 127.5 - 1.0)

    def __repr__(self) -> str:
        return f"KineticsLatents({str(self.path)!r}, {self.videos} videos x {self.clips_per_video} clips, normalize={self.normalize!r})"
