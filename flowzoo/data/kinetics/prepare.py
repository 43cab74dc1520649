"""`flowzoo prepare kinetics700`: encode clips of every video once with the SD-VAE, frame by frame.

    OUT/manifest.json                 settings, classes, finished shards, skipped videos (the commit record)
    OUT/shard-00000.latents.npy       (n, K, 2, 4, F, R/8, R/8): K clips per video, axis 2 = (posterior
                                      mean, posterior std), then channels, time, height, width
    OUT/shard-00000.labels.npy        (n,) int64 class indices
    OUT/shard-00000.rows.npy          (n,) int64 row of each video among the split's CSV rows (provenance)

The K clips of a video are the windows at the centres of K equal parts of it (ClipSpec.spread_starts);
K is odd so that clip K // 2 is the centre window, the one evaluation uses (as the video dataset does).
Training picks among the K clips, a discrete stand-in for the random temporal offset of the video
dataset. Shard k holds the readable videos among the split's rows [k * shard_size, (k + 1) * shard_size)
in CSV order; missing, unreadable and too-short videos are listed in manifest["skipped"] with the
reason. Shards and the manifest are written atomically (flowzoo.atomic), the manifest after its shard,
so a killed run loses at most the shard in progress: run the same command again and it continues.
The frame pixels go through the ImageNet pipeline's VAE helper (flowzoo.data.imagenet.vae.encode).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from flowzoo.atomic import atomic_write, write_json
from flowzoo.data.imagenet.prepare import DTYPES, _progress, channel_stats
from flowzoo.data.imagenet.vae import describe_vae, encode, load_vae
from flowzoo.data.kinetics.clips import ClipReader, ClipSpec
from flowzoo.data.kinetics.dataset import load_index
from flowzoo.data.kinetics.decoders import get_decoder

FORMAT = "flowzoo-video-latents-v1"
MANIFEST = "manifest.json"


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    path = Path(out) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def is_video_cache(path: str | Path) -> bool:
    """Whether path is a folder written by prepare_video_latents (finished or not)."""
    try:
        manifest = read_manifest(path) if Path(path).is_dir() else None
    except (OSError, ValueError):
        return False
    return bool(manifest) and manifest.get("format") == FORMAT


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def prepare_video_latents(data: str | Path, vae: Any, out: str | Path, *, annotations: str | Path | None = None,
                          split: str = "train", frames: int = 16, stride: int = 2, resolution: int = 64,
                          clips_per_video: int = 1, shard_size: int = 1000, batch_size: int = 8, dtype: str = "float16",
                          decoder: str = "pyav", device: str = "auto", workers: int | None = None, progress: bool = True,
                          stop_after: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Encode the split's videos under DATA into OUT (resuming what a previous run finished); returns the manifest.

    batch_size: videos per VAE pass (each gives clips_per_video * frames images).
    stop_after: finish at most this many new shards, then return (tests use it to stand in for a kill).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    if resolution % 8:
        raise ValueError(f"resolution must be a multiple of 8 for the SD-VAE (it downsamples by 8), got {resolution}.")
    if clips_per_video < 1 or clips_per_video % 2 == 0:
        raise ValueError(f"clips_per_video must be odd (1, 3, 5 ...) so that the middle clip is the centre one, got {clips_per_video}.")
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}.")
    spec, out = ClipSpec(frames, stride, resolution), Path(out)
    classes, rows, files, _, _ = load_index(data, [annotations] if annotations else None, split)
    label_of = {name: i for i, name in enumerate(classes)}
    settings = {"format": FORMAT, "split": split, "frames": frames, "stride": stride, "resolution": resolution,
                "clips_per_video": clips_per_video, "shard_size": shard_size, "dtype": dtype, "vae": describe_vae(vae),
                "num_rows": len(rows), "classes": classes,
                "preprocessing": "per-frame ADM center_crop_arr; K windows at the centres of K equal parts"}
    manifest = read_manifest(out)
    if manifest is None:
        manifest = {**settings, "data": str(Path(data).resolve()), "annotations": str(Path(annotations).resolve()) if annotations else None,
                    "shards": [], "skipped": [], "complete": False}
    else:
        changed = [k for k in settings if manifest.get(k) != settings[k]]
        if changed:
            raise ValueError(f"{out} holds a video latent cache made with other settings ({', '.join(changed)}); use a new --out.")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    model = load_vae(vae, device)
    reader = ClipReader(get_decoder(decoder), spec, warn=False)  # the log callback reports skips
    starts = lambda n: spec.spread_starts(n, clips_per_video)  # noqa: E731
    num_shards = (len(rows) + shard_size - 1) // shard_size
    done = len(manifest["shards"])
    pool = ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1))  # FFmpeg and PIL work outside the GIL
    bar = _progress(progress, total=len(rows), completed=min(done * shard_size, len(rows)))
    started, encoded, h = time.perf_counter(), 0, resolution // 8
    try:
        for k in range(done, num_shards if stop_after is None else min(num_shards, done + stop_after)):
            lo, hi = k * shard_size, min((k + 1) * shard_size, len(rows))
            latents, kept, skipped = [], [], []
            for start in range(lo, hi, batch_size):
                batch = list(range(start, min(start + batch_size, hi)))
                clips = list(pool.map(lambda r: None if files[r] is None else reader.read(files[r], starts), batch))
                good = []
                for r, clip in zip(batch, clips):
                    if clip is None:
                        why = "missing" if files[r] is None else reader.skipped.get(str(files[r]), "unreadable")
                        skipped.append(f"{rows[r].stem}: {why}")
                        log(f"skipped {rows[r].stem}: {why}")
                    else:
                        good.append(r)
                if good:
                    x = torch.stack([clips[batch.index(r)] for r in good])  # (B, K, F, R, R, 3) uint8
                    b = x.shape[0]
                    mean, std = encode(model, x.reshape(-1, resolution, resolution, 3))  # (B*K*F, 4, h, w) each
                    pair = torch.stack([mean, std], dim=1).reshape(b, clips_per_video, frames, 2, 4, h, h)
                    latents.append(pair.permute(0, 1, 3, 4, 2, 5, 6))  # (B, K, 2, 4, F, h, w)
                    kept += good
                encoded += len(batch)
                if bar is not None:
                    bar[0].update(bar[1], advance=len(batch),
                                  description=f"shard {k + 1}/{num_shards}  {encoded / (time.perf_counter() - started):.2f} videos/s")
            lat = torch.cat(latents) if latents else torch.zeros(0, clips_per_video, 2, 4, frames, h, h)
            name = f"shard-{k:05d}"
            _save_npy(out / f"{name}.latents.npy", lat.numpy().astype(dtype))
            _save_npy(out / f"{name}.labels.npy", np.asarray([label_of[rows[r].label] for r in kept], dtype=np.int64))
            _save_npy(out / f"{name}.rows.npy", np.asarray(kept, dtype=np.int64))
            mean, std = lat[:, :, 0].double(), lat[:, :, 1].double()  # (n, K, 4, F, h, w)
            dims = (0, 1, 3, 4, 5)
            manifest["shards"].append({
                "name": name, "count": len(kept), "elements": int(mean[:, :, 0].numel()),
                "sum": mean.sum(dim=dims).tolist() if len(kept) else [0.0] * 4,
                "sumsq": (mean**2 + std**2).sum(dim=dims).tolist() if len(kept) else [0.0] * 4,
            })
            manifest["skipped"] += skipped
            manifest["complete"] = len(manifest["shards"]) == num_shards
            if manifest["complete"]:
                manifest["channel_stats"] = channel_stats(manifest["shards"])
            write_json(out / MANIFEST, manifest, indent=1)  # the commit point of shard k
    finally:
        pool.shutdown()
        if bar is not None:
            bar[0].stop()
    return manifest
