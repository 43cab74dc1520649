"""Clip decoding speed, decord vs PyAV, measured interleaved in one run (the two share the machine's state).

    python benchmarks/decode_speed.py                                   # generated Kinetics-like videos, < 1 min
    python benchmarks/decode_speed.py --data /data/k700-2020 --annotations /data/k700-2020/annotations/train.csv

Each round reads the same seeded training clips (16 frames, stride 2, random window, 64 px centre crop,
the dataset's real code path: KineticsClips.load) with each decoder, alternating which goes first; the
report is the median clips/s over rounds and the ratio decord / PyAV. Generated videos imitate what the
Kinetics downloaders produce: 10 s at 25 fps, 340x256, H.264 with one keyframe per 250 frames.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def generate(root: Path, videos: int, frames: int, width: int, height: int) -> tuple[Path, Path]:
    from video_standins import CLASSES, shape_frames, write_video

    rows = []
    for i in range(videos):
        label = CLASSES[i % len(CLASSES)]
        row = {"label": label, "youtube_id": f"bench{i:06d}", "time_start": 0, "time_end": 10, "split": "train"}
        write_video(root / "train" / label / f"bench{i:06d}_000000_000010.mp4",
                    shape_frames(i % len(CLASSES), frames, width, height, seed=i), keyint=250)
        rows.append(row)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    with open(root / "annotations" / "train.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root, root / "annotations" / "train.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="Kinetics root (default: generate videos in a temp folder)")
    parser.add_argument("--annotations", help="annotation CSV (default: found under --data)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--clips", type=int, default=16, help="clips per decoder per round")
    parser.add_argument("--workers", type=int, default=1, help="decoding threads (1: per-core speed)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--videos", type=int, default=6, help="generated videos")
    args = parser.parse_args()

    import torch

    from flowzoo.data.kinetics import KineticsClips
    from flowzoo.data.kinetics.dataset import CLIP

    torch.set_num_threads(1)
    started = time.perf_counter()
    root, annotations = (Path(args.data), args.annotations) if args.data else generate(
        Path(tempfile.mkdtemp(prefix="flowzoo-decode-")), args.videos, 250, 340, 256)
    made = time.perf_counter() - started
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = {name: KineticsClips(root, annotations, "train", args.frames, args.stride, args.resolution, decoder=name,
                                    workers=args.workers, prefetch=False) for name in ("pyav", "decord")}
        n = len(data["pyav"])
        rates: dict[str, list[float]] = {name: [] for name in data}
        data["pyav"].load([(0, (CLIP, 0, 0, 0), False)]), data["decord"].load([(0, (CLIP, 0, 0, 0), False)])  # warm up
        for r in range(args.rounds):
            pick = torch.randint(n, (args.clips,), generator=torch.Generator().manual_seed(r))
            jobs = [(int(i), (CLIP, 1, r, k), False) for k, i in enumerate(pick)]
            order = ("pyav", "decord") if r % 2 == 0 else ("decord", "pyav")
            for name in order:
                t = time.perf_counter()
                data[name].load(jobs)
                rates[name].append(len(jobs) / (time.perf_counter() - t))
    source = f"{args.data}" if args.data else f"{args.videos} generated videos (250 frames, 340x256, H.264, keyint 250; written in {made:.1f} s)"
    print(f"{n} videos from {source}")
    print(f"clips of {args.frames} frames, stride {args.stride}, {args.resolution} px; {args.rounds} rounds x {args.clips} clips; workers={args.workers}")
    for name, values in rates.items():
        print(f"  {name:7s} {statistics.median(values):8.1f} clips/s  (rounds: {', '.join(f'{v:.1f}' for v in values)})")
    ratio = statistics.median(rates["decord"]) / statistics.median(rates["pyav"])
    print(f"  decord / pyav = {ratio:.2f}x   (total {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
