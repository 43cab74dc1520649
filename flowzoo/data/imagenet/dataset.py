"""ImageNet-256 as SD-VAE latents (4x32x32) read from a cache that `flowzoo prepare imagenet256` wrote.

Every read draws a fresh posterior sample x = mean + std * eps (as DiT/MeanFlow/alpha-Flow training
does), with eps from a generator seeded by (seed, rank, epoch, position of the batch), so a resumed run
draws the same eps as an uninterrupted one. Latents are then normalised:
    normalize="sd"           x * 0.18215 (Stable Diffusion's factor; the published recipes use it)
    normalize="per_channel"  (x - mean_c) / std_c with the statistics the prepare step recorded
Flipped latents (prepared with --flip) count as separate items, so the epoch permutation walks both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowzoo.data.imagenet.prepare import FORMAT, read_manifest
from flowzoo.data.imagenet.vae import SD_SCALE, decode, load_vae
from flowzoo.data.stream import REFERENCE, EpochStream, generator
from flowzoo.registry import DATASETS

LATENT_NOISE = 4  # seed-family tag for the posterior eps (stream.py uses 1-3)
NORMALIZATIONS = ("sd", "per_channel")


def _load_shard(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """One .npy shard of the cache, or ValueError with one sentence when it is missing, torn or not an array."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"the latent-cache shard {path} is missing or unreadable ({type(exc).__name__}); move it and "
                         f"manifest.json aside and rerun `flowzoo prepare imagenet256` with the same --out to rebuild it.") from None


def open_cache(path: str | Path | None) -> dict[str, Any]:
    """The manifest of a finished latent cache, or ValueError with one sentence saying what to do."""
    if path is None:
        raise ValueError("imagenet256 needs its latent cache: pass --data DIR (or data.path) with a folder written by `flowzoo prepare imagenet256`.")
    manifest = read_manifest(path) if Path(path).is_dir() else None
    if manifest is None or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a flowzoo latent cache; build one with `flowzoo prepare imagenet256 --data TRAIN_DIR --vae VAE --out {path}`.")
    if not manifest.get("complete"):
        raise ValueError(f"the latent cache {path} is unfinished; run the same `flowzoo prepare imagenet256` command again to complete it.")
    return manifest


class LatentStream(EpochStream):
    """EpochStream over the cache's items; the posterior sample of each batch is seeded by its position."""

    def __init__(self, dataset: "ImageNetLatents", batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        super(EpochStream, self).__init__(batch_size, seed, rank, world_size)
        self.dataset, self.x = dataset, range(len(dataset))  # _permutation only needs len(self.x)
        self._perm_epoch, self._perm = -1, None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = self.epoch, self.index  # the batch's position names its noise
        world = self._take(self.batch_size * self.world_size)
        idx = world[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        return self.dataset.read(idx, generator(LATENT_NOISE, self.seed, self.rank, epoch, index))


class PosteriorShards:
    """What every latent cache reads the same way: items = row * per_row + column of the shards
    (ImageNet: image x view, Kinetics: video x clip), each holding an SD-VAE posterior (mean, std).
    A class using it sets ``per_row``, ``_shards``, ``_offsets`` (rows before each shard), ``labels``,
    ``normalize`` and, for per-channel normalisation, ``_mean`` / ``_std``."""

    per_row: int = 1

    def posterior(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, std, label) of items idx, unnormalised, float32."""
        row, column = np.divmod(np.asarray(idx, dtype=np.int64), self.per_row)
        shard = np.searchsorted(self._offsets, row, side="right") - 1
        rows = np.stack([self._shards[s][r - self._offsets[s], c] for s, r, c in zip(shard, row, column)])
        rows = torch.from_numpy(rows.astype(np.float32))
        return rows[:, 0], rows[:, 1], self.labels[torch.from_numpy(row)]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * SD_SCALE if self.normalize == "sd" else (x - self._mean) / self._std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        return x / SD_SCALE if self.normalize == "sd" else x * self._std + self._mean

    def read(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A posterior sample per item (the VAE's own noise, drawn from gen), normalised, and the labels."""
        mean, std, y = self.posterior(idx)
        eps = torch.randn(mean.shape, generator=gen)
        return self.normalise(mean + std * eps), y


@DATASETS.register("imagenet256")
class ImageNetLatents(PosteriorShards):
    """Class-conditional ImageNet 256x256 as normalised SD-VAE latents from a prepared cache."""

    name = "imagenet256"

    def __init__(self, path: str | None = None, normalize: str = "sd", use_flips: bool = True, vae: str | None = None,
                 fid: dict | None = None, fd_dinov2: dict | None = None):
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"data.normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}.")
        self.path, self.manifest = Path(path or "."), open_cache(path)
        self.normalize, self.vae_source, self.fid = normalize, vae or self.manifest["vae"], dict(fid or {})
        self.fd_dinov2 = dict(fd_dinov2 or {})  # data.fd_dinov2: FD-DINOv2 is measured when this is given
        self.classes = self.manifest["classes"]
        self.num_classes = len(self.classes)
        size = self.manifest["image_size"] // 8
        self.sample_shape = (4, size, size)
        self.views = 2 if (self.manifest["flip"] and use_flips) else 1
        self.per_row = self.views  # item = image * views + view
        self._shards = [_load_shard(self.path / f"{s['name']}.latents.npy", mmap_mode="r") for s in self.manifest["shards"]]
        labels = [_load_shard(self.path / f"{s['name']}.labels.npy") for s in self.manifest["shards"]]
        self.labels = torch.from_numpy(np.concatenate(labels)) if labels else torch.zeros(0, dtype=torch.long)
        self._offsets = np.cumsum([0] + [len(s) for s in self._shards])
        stats = self.manifest.get("channel_stats") or {"mean": [0.0] * 4, "std": [1.0] * 4}
        self._mean = torch.tensor(stats["mean"], dtype=torch.float32).view(1, 4, 1, 1)
        self._std = torch.tensor(stats["std"], dtype=torch.float32).view(1, 4, 1, 1)
        self._vae = None

    def __len__(self) -> int:
        return int(self._offsets[-1]) * self.views

    def stream(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> LatentStream:
        return LatentStream(self, batch_size, seed, rank, world_size)

    def reference(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """n normalised posterior samples of training images (seeded subset, unflipped; cycles if n > images)."""
        images = int(self._offsets[-1])
        pick = torch.randperm(images, generator=generator(REFERENCE, seed))[torch.arange(n) % images] * self.views
        return self.read(pick, generator(REFERENCE, seed, 1))

    # -- pixels ---------------------------------------------------------------------------------------
    def vae(self, device: str | torch.device | None = None):
        if self._vae is None:
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._vae = load_vae(self.vae_source, device)
        return self._vae

    def decode(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """(N, 3, 256, 256) uint8 images from normalised latents (what the model generates)."""
        return decode(self.vae(), self.denormalise(x.float().cpu()), batch_size)

    def decode_for_display(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] for sample grids."""
        return self.decode(x).float() / 127.5 - 1.0

    def __repr__(self) -> str:
        return f"ImageNetLatents({str(self.path)!r}, {len(self)} items, normalize={self.normalize!r})"
