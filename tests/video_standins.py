"""Stand-ins for Kinetics tests: small H.264 mp4 files written with PyAV, in the Kinetics layout, with CSVs.

    root, csv = write_kinetics_standin(tmp_path / "k700")

writes (every video 25 fps, yuv420p, a keyframe every 8 frames and B-frames, so seeking decoders are
exercised) a tree like the kinetics-dataset downloader's:

    root/annotations/train.csv, root/annotations/validate.csv    (label, youtube_id, time_start, time_end, split)
    root/train/<label>/<id>_<start>_<end>.mp4                    8 good videos, 24-40 frames, 3 classes
    root/train/<id>...mp4  and  root/<id>...mp4                  two of the 8 in the other accepted layouts
    root/val/<label>/...mp4                                      2 validation videos
and the failures a real download has: one file of random bytes (BROKEN), one row without a file
(MISSING), one video of 6 frames (SHORT). Each class has its own moving shape, so a class-conditional
model has something to learn; frame t of a video is a deterministic function of (video, t).
"""

from __future__ import annotations

import csv
import functools
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CLASSES = ("abseiling", "air drumming", "passing American football (in game)")  # real K700 labels: spaces, brackets
SIZES = ((40, 32), (32, 40), (56, 40), (64, 48))  # (width, height): landscape and portrait; decord-safe widths
GOOD = 8
BROKEN, MISSING, SHORT = "brokenvideo", "missingvide", "shortvideo0"  # youtube ids of the three failures


def shape_frames(label: int, num_frames: int, width: int, height: int, seed: int) -> np.ndarray:
    """(T, H, W, 3) uint8: a class-specific shape moving over a smooth background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(20, 90, size=3).astype(np.float32)
    colour = np.array([[230, 60, 40], [40, 220, 90], [60, 90, 240]][label], dtype=np.float32)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        phase = t / max(num_frames - 1, 1)
        img = base + 25 * np.sin(xx / 7 + 0.3 * t)[..., None]  # drifting background stripes
        if label == 0:  # a square crossing left to right
            cx, cy = phase * width, height / 2
            mask = (abs(xx - cx) < height / 5) & (abs(yy - cy) < height / 5)
        elif label == 1:  # a disc falling
            cx, cy = width / 2, phase * height
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < (min(width, height) / 5) ** 2
        else:  # a bar swinging back and forth
            cx = width / 2 + np.sin(2 * np.pi * phase) * width / 3
            mask = abs(xx - cx) < width / 10
        img[mask] = colour
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def write_video(path: Path, frames: np.ndarray, fps: int = 25, keyint: int = 8) -> Path:
    """H.264 (or MPEG-4 where PyAV lacks libx264) mp4 of (T, H, W, 3) uint8 frames."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    options = {"x264-params": f"keyint={keyint}:min-keyint={keyint}:bframes=2:threads=1"} if codec == "libx264" else {"g": str(keyint)}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.thread_count = 1
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _row(label: str, youtube_id: str, start: int, split: str) -> dict:
    return {"label": label, "youtube_id": youtube_id, "time_start": start, "time_end": start + 10, "split": split}


def _name(row: dict) -> str:
    return f"{row['youtube_id']}_{row['time_start']:06d}_{row['time_end']:06d}.mp4"


def write_kinetics_standin(root: Path, num_good: int = GOOD, failures: bool = True) -> tuple[Path, Path]:
    """Write the tree above under root; returns (root, root/annotations/train.csv)."""
    root = Path(root)
    train, val = [], []
    for i in range(num_good):
        label = i % len(CLASSES)
        row = _row(CLASSES[label], f"vid{i:02d}_a-b{i}"[:11], 10 * i, "train")  # ids keep YouTube's '_' and '-'
        width, height = SIZES[i % len(SIZES)]
        layout = {3: root / "train", 5: root}.get(i, root / "train" / row["label"])
        write_video(layout / _name(row), shape_frames(label, 24 + (i * 5) % 17, width, height, seed=i))
        train.append(row)
    for j in range(2):
        row = _row(CLASSES[j], f"valvid{j:02d}xy", 5, "validate")
        write_video(root / "val" / row["label"] / _name(row), shape_frames(j, 30, 40, 32, seed=100 + j))
        val.append(row)
    if failures:
        broken, missing, short = _row(CLASSES[0], BROKEN, 0, "train"), _row(CLASSES[1], MISSING, 0, "train"), _row(CLASSES[2], SHORT, 0, "train")
        path = root / "train" / broken["label"] / _name(broken)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        write_video(root / "train" / short["label"] / _name(short), shape_frames(2, 6, 40, 32, seed=50))
        train += [broken, missing, short]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("validate", val)):
        with open(root / "annotations" / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["label", "youtube_id", "time_start", "time_end", "split"])
            writer.writeheader()
            writer.writerows(rows)
    return root, root / "annotations" / "train.csv"


class StandInI3D(nn.Module):
    """I3D's interface on a CPU budget: uint8 or [-1, 1] clips (N, 3, T, H, W) -> (N, 32) features."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(3, 8, 3, stride=(1, 2, 2), padding=1)
        self.conv2 = nn.Conv3d(8, 16, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False) -> torch.Tensor:
        x = x.float()
        if rescale:
            x = x / 127.5 - 1
        if resize:  # the real I3D resizes to 224x224
            x = F.interpolate(x, size=(x.shape[2], 32, 32), mode="trilinear", align_corners=False)
        h = self.conv2(F.gelu(self.conv1(x))).flatten(2)
        feats = torch.cat([h.mean(2), h.std(2)], dim=1)  # (N, 32): first and second moments of each channel
        return feats if return_features else feats.softmax(-1)


def write_standin_i3d(path: Path) -> Path:
    """StandInI3D, scripted and saved with torch.jit.save: loaded through the same path as i3d_torchscript.pt."""
    import warnings

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch >= 2.10
        torch.jit.save(torch.jit.script(StandInI3D().eval()), str(path))
    return Path(path)


@functools.lru_cache(maxsize=None)
def kinetics_for_tests(**kwargs):
    """A kinetics700 dataset on a stand-in tree written once per test process (8 frames, stride 2, 32 px,
    frames kept in memory), for registry-wide tests; kwargs override those settings."""
    import warnings

    from flowzoo.data import create_dataset

    root, csv_path = write_kinetics_standin(Path(tempfile.mkdtemp(prefix="flowzoo-kinetics-")))
    i3d = write_standin_i3d(root / "standin_i3d.pt")
    settings = {"frames": 8, "stride": 2, "resolution": 32, "workers": 0, "cache_frames": True,
                "fvd": {"weights": str(i3d), "num_frames": 8, "num_real": 64, "batch_size": 32}, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stand-in's missing video is there on purpose
        return create_dataset("kinetics700", path=str(root), annotations=str(csv_path), **settings)
