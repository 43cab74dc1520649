"""`flowzoo prepare imagenet256`: encode every train image once with the SD-VAE into latent shards.

    OUT/manifest.json                   settings, classes, finished shards (the commit record)
    OUT/shard-00000.latents.npy         (n, F, 2, 4, 32, 32): F = 1 (as is) or 2 (+ horizontal flip),
                                        axis 2 = (posterior mean, posterior std)
    OUT/shard-00000.labels.npy          (n,) int64 class indices

Shard k holds the readable images among files [k * shard_size, (k + 1) * shard_size) of the sorted
scan. Each shard is written atomically (flowzoo.atomic) and only then recorded in the manifest, so a
killed run loses at most the shard in progress: run the same command again and it continues. Files PIL
cannot decode are reported and skipped (listed in the manifest). Each finished shard also records
per-channel sums of the posterior, from which the per-channel normalisation statistics are computed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from flowzoo import run_lock
from flowzoo.atomic import atomic_write, write_json
from flowzoo.data.imagenet.folder import load_cropped, scan_image_folder
from flowzoo.data.imagenet.vae import describe_vae, encode, load_vae

FORMAT = "flowzoo-latents-v1"
MANIFEST = "manifest.json"
DTYPES = ("float16", "float32")


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        manifest = None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is torn or not a flowzoo manifest; move it aside and run `flowzoo prepare` with "
                         f"the same --out again (the shards it lists are re-encoded).")
    return manifest


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    write_json(out / MANIFEST, manifest, indent=1)


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def channel_stats(shards: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per-channel mean and std of posterior samples mean + std * eps over all finished shards (unflipped)."""
    s = np.sum([sh["sum"] for sh in shards], axis=0)
    s2 = np.sum([sh["sumsq"] for sh in shards], axis=0)  # sum of mean^2 + std^2 = E[sample^2] per element
    n = float(sum(sh["elements"] for sh in shards))
    mean = s / n
    return {"mean": mean.tolist(), "std": np.sqrt(np.maximum(s2 / n - mean**2, 0.0)).tolist()}


def prepare_latents(data: str | Path, vae: Any, out: str | Path, **options: Any) -> dict[str, Any]:
    """Encode DATA into OUT (see ``_prepare_latents``), refused at once while another process builds OUT."""
    if_main = run_lock.hold(out, "latent cache") if run_lock.is_main_process() else contextlib.nullcontext()
    with if_main:
        return _prepare_latents(data, vae, out, **options)


def _prepare_latents(data: str | Path, vae: Any, out: str | Path, *, shard_size: int = 10_000, batch_size: int = 64,
                    flip: bool = False, image_size: int = 256, dtype: str = "float16", device: str = "auto",
                    workers: int | None = None, progress: bool = True, stop_after: int | None = None,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Encode DATA into OUT (resuming what a previous run finished); returns the manifest.

    stop_after: finish at most this many new shards, then return (tests use it to stand in for a kill).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    out = Path(out)
    index = scan_image_folder(data)
    settings = {"format": FORMAT, "image_size": image_size, "flip": bool(flip), "shard_size": shard_size, "dtype": dtype,
                "vae": describe_vae(vae), "num_files": len(index), "classes": index.classes,
                "preprocessing": "ADM center_crop_arr (box halving, bicubic, centre crop)"}
    manifest = read_manifest(out)
    if manifest is None:
        manifest = {**settings, "data": str(Path(data).resolve()), "shards": [], "skipped": [], "complete": False}
    else:
        changed = [k for k in settings if manifest.get(k) != settings[k]]
        if changed:
            raise ValueError(f"{out} holds a latent cache made with other settings ({', '.join(changed)}); use a new --out.")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    model = load_vae(vae, device)
    num_shards = (len(index) + shard_size - 1) // shard_size
    done = len(manifest["shards"])
    pool = ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1))  # PIL decodes and resizes outside the GIL
    bar = _progress(progress, total=len(index), completed=min(done * shard_size, len(index)))
    started, encoded = time.perf_counter(), 0
    try:
        for k in range(done, num_shards if stop_after is None else min(num_shards, done + stop_after)):
            paths = index.files[k * shard_size:(k + 1) * shard_size]
            labels = index.labels[k * shard_size:(k + 1) * shard_size]
            latents, kept, skipped = [], [], []
            for start in range(0, len(paths), batch_size):
                batch_paths = paths[start:start + batch_size]
                images = list(pool.map(lambda p: load_cropped(p, image_size), batch_paths))
                for p, img in zip(batch_paths, images):
                    if img is None:
                        skipped.append(str(p.relative_to(index.root)))
                        log(f"skipped {p}: not a readable image")
                good = [i for i, img in enumerate(images) if img is not None]
                if good:
                    x = torch.from_numpy(np.stack([images[i] for i in good]))
                    views = [x, x.flip(2)] if flip else [x]  # (B, H, W, 3): flip the width axis
                    pairs = [torch.stack(encode(model, v), dim=1) for v in views]  # (B, 2, 4, h, w) each
                    latents.append(torch.stack(pairs, dim=1))
                    kept += [labels[start + i] for i in good]
                encoded += len(batch_paths)
                if bar is not None:
                    bar[0].update(bar[1], advance=len(batch_paths),
                                  description=f"shard {k + 1}/{num_shards}  {encoded / (time.perf_counter() - started):.1f} img/s")
            lat = torch.cat(latents) if latents else torch.zeros(0, 2 if flip else 1, 2, 4, image_size // 8, image_size // 8)
            name = f"shard-{k:05d}"
            _save_npy(out / f"{name}.latents.npy", lat.numpy().astype(dtype))
            _save_npy(out / f"{name}.labels.npy", np.asarray(kept, dtype=np.int64))
            mean, std = lat[:, 0, 0].double(), lat[:, 0, 1].double()
            manifest["shards"].append({
                "name": name, "count": len(kept), "elements": len(kept) * mean[0, 0].numel() if len(kept) else 0,
                "sum": mean.sum(dim=(0, 2, 3)).tolist() if len(kept) else [0.0] * 4,
                "sumsq": (mean**2 + std**2).sum(dim=(0, 2, 3)).tolist() if len(kept) else [0.0] * 4,
            })
            manifest["skipped"] += skipped
            manifest["complete"] = len(manifest["shards"]) == num_shards
            if manifest["complete"]:
                manifest["channel_stats"] = channel_stats(manifest["shards"])
            _write_manifest(out, manifest)  # the commit point of shard k
    finally:
        pool.shutdown()
        if bar is not None:
            bar[0].stop()
    return manifest


def _progress(enabled: bool, total: int, completed: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    progress.start()
    return progress, progress.add_task("encoding", total=total, completed=completed)
