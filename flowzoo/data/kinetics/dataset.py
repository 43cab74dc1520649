"""Kinetics-700 as class-conditional clips decoded from the videos: samples (3, F, H, W) in [-1, 1].

Training draws a random window of each video (every window equally likely); evaluation (`reference`)
takes the centre window, so the real clips FVD compares against never depend on a seed. Everything a
batch holds is a pure function of (seed, epoch, position in the epoch, files on disk):

- the epoch permutation is randperm(N) seeded by (EPOCH, seed, epoch), walked like EpochStream's;
- slot p of epoch e draws its window and, should its video fail, its replacement videos from a generator
  seeded by (CLIP, seed, e, p), never from shared state;
so a resumed stream (state_dict: seed, epoch, index) yields exactly the batches of an uninterrupted one,
whatever the worker count, prefetching, or which broken videos an earlier run had already met.

Decoding runs on `workers` threads (FFmpeg releases the GIL) and the stream prefetches the next batch
in the background while the model trains on the current one.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from flowzoo.data.kinetics.annotations import SPLIT_FOLDERS, class_names, find_annotations, locate_videos, read_annotations
from flowzoo.data.kinetics.clips import REAL_CLIPS, ClipReader, ClipSpec, display_frames, to_uint8, to_unit
from flowzoo.data.kinetics.decoders import get_decoder
from flowzoo.data.stream import EPOCH, REFERENCE, DataStream, generator

CLIP = 5  # seed-family tag for windows and replacements (stream.py uses 1-3, imagenet's posterior noise 4)
MAX_TRIES = 64  # a slot whose video fails tries this many seeded replacements before giving up


def load_index(path, annotations, split: str):
    """(classes, the split's CSV rows, their files (None: missing), [(file, label index)] of the found ones,
    [stems of the missing ones])."""
    if path is None:
        raise ValueError("kinetics700 needs its videos: pass --data DIR (or data.path) with the Kinetics root, or a cache from `flowzoo prepare kinetics700`.")
    if not Path(path).is_dir():
        raise FileNotFoundError(f"video folder {path} does not exist; pass the Kinetics root (with train/ inside) as --data DIR or data.path.")
    csvs = ([annotations] if isinstance(annotations, (str, Path)) else annotations) or find_annotations(path, split)
    if not csvs:
        raise ValueError(f"no annotation CSV found for split {split!r} under {path} (looked for annotations/{split}.csv and {split}.csv); pass data.annotations=PATH/TO/{split}.csv.")
    clips = read_annotations(csvs)
    classes = class_names(clips)
    splits = SPLIT_FOLDERS.get(split, (split,))
    rows = [c for c in clips if c.split in splits]
    if not rows:
        present = sorted({c.split for c in clips})
        raise ValueError(f"the annotations have no rows of split {split!r} (they have: {', '.join(present)}); set data.split to one of those.")
    label_of = {name: i for i, name in enumerate(classes)}
    files = locate_videos(path, rows)
    items = [(f, label_of[c.label]) for c, f in zip(rows, files) if f is not None]
    missing = [c.stem for c, f in zip(rows, files) if f is None]
    return classes, rows, files, items, missing


class KineticsClips:
    """Kinetics-700 clips from the videos: (3, F, H, W) in [-1, 1], labels = sorted class index."""

    name = "kinetics700"

    def __init__(self, path: str | Path | None, annotations: str | list | None = None, split: str = "train",
                 frames: int = 16, stride: int = 2, resolution: int = 64, decoder: str = "pyav",
                 workers: int | None = None, prefetch: bool = True, cache_frames: bool = False, fvd: dict | None = None):
        self.spec = ClipSpec(frames, stride, resolution)
        self.classes, _, _, self.items, missing = load_index(path, annotations, split)
        self.path, self.split, self.fvd = Path(path), split, dict(fvd or {})
        self.decoder_name = decoder
        self.reader = ClipReader(get_decoder(decoder), self.spec, cache_frames)
        for stem in missing:
            self.reader.skip(stem, "missing", quiet=True)
        if missing:  # one line, not one per file: a fresh Kinetics download misses thousands
            warnings.warn(f"kinetics700: {len(missing)} of {len(missing) + len(self.items)} annotated {split} videos are missing under {path} (first: {missing[0]}); they are skipped.", stacklevel=2)
        if not self.items:
            raise ValueError(f"none of the annotated {split} videos were found under {path}; see docs/kinetics.md for the folder layouts read.")
        self.num_classes = len(self.classes)
        self.sample_shape = (3, self.spec.frames, self.spec.resolution, self.spec.resolution)
        self.labels = torch.tensor([label for _, label in self.items], dtype=torch.long)
        self.workers = min(8, os.cpu_count() or 1) if workers is None else int(workers)
        self.prefetch = prefetch
        # Made here, not on first use: the prefetch thread and the caller may both load at once.
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="kinetics-decode") if self.workers > 1 else None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def skipped(self) -> dict[str, str]:
        """Every video skipped so far (missing at start; unreadable or too short when first read) -> why."""
        return dict(self.reader.skipped)

    # -- reading ----------------------------------------------------------------------------------------
    def _map(self, fn, jobs: list) -> list:
        if self._pool is None or len(jobs) <= 1:
            return [fn(j) for j in jobs]
        return list(self._pool.map(fn, jobs))

    def _slot(self, job: tuple[int, tuple[int, ...], bool]) -> tuple[torch.Tensor, int]:
        """One clip for a slot: its video, else seeded replacements; a pure function of the job."""
        item, key, centre = job
        gen = generator(*key)
        for attempt in range(MAX_TRIES):
            if attempt:
                item = int(torch.randint(len(self.items), (1,), generator=gen))
            u = float(torch.rand((), generator=gen, dtype=torch.float64))  # drawn every attempt, used in training
            start = self.spec.eval_start if centre else (lambda n, u=u: self.spec.train_start(n, u))
            clip = self.reader.read(self.items[item][0], lambda n: [start(n)])
            if clip is not None:
                return clip[0], self.items[item][1]
        raise ValueError(f"{MAX_TRIES} videos in a row could not be read (e.g. {self.items[item][0]}: {self.reader.skipped.get(str(self.items[item][0]))}); check the data with docs/kinetics.md.")

    def load(self, jobs: list[tuple[int, tuple[int, ...], bool]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) for jobs (item, seed key, centre window?)."""
        out = self._map(self._slot, jobs)
        return to_unit(torch.stack([c for c, _ in out])), torch.tensor([y for _, y in out], dtype=torch.long)

    def stream(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> "ClipStream":
        return ClipStream(self, batch_size, seed, rank, world_size)

    def reference(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """n centre-window clips of a seeded choice of videos (cycling if n > videos), never augmented."""
        return self.load(self._reference_jobs(n, seed))

    def _reference_jobs(self, n: int, seed: int) -> list:
        pick = torch.randperm(len(self), generator=generator(REFERENCE, seed))[torch.arange(n) % len(self)]
        return [(int(i), (REFERENCE, seed, 1, j), True) for j, i in enumerate(pick)]

    # -- pixels (what FVD and the sample grids use) ------------------------------------------------------
    def decode_video(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, F, H, W) uint8 from samples in [-1, 1]."""
        return to_uint8(x)

    def reference_kind(self) -> str:
        """FVD's reference here is always clips of the real videos (a latent cache may fall back to reconstructions)."""
        return REAL_CLIPS

    def reference_video(self, n: int, seed: int = 0, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, F, H, W) uint8 real clips and their labels (= reference(n, seed) in pixels), loaded in chunks
        so FVD-2048 at 128 px never holds the 6 GB float copy."""
        jobs, chunks = self._reference_jobs(n, seed), []
        for start in range(0, n, chunk):
            x, y = self.load(jobs[start:start + chunk])
            chunks.append((to_uint8(x), y))
        return torch.cat([c for c, _ in chunks]), torch.cat([y for _, y in chunks])

    def decode_for_display(self, x: torch.Tensor) -> torch.Tensor:
        """8 frames of each of the first 8 clips, (64, 3, H, W) in [-1, 1]: one video per row of an 8-wide grid."""
        return display_frames(x.float().cpu().clamp(-1, 1))

    def __repr__(self) -> str:
        s = self.spec
        return f"KineticsClips({str(self.path)!r}, {self.split}, {len(self)} videos, {s.frames}x{s.resolution}px stride {s.stride}, {self.decoder_name})"


class ClipStream(DataStream):
    """Epoch-permutation walk over the videos; slot (epoch, p) is decoded from its own seeded key."""

    def __init__(self, dataset: KineticsClips, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        super().__init__(batch_size, seed, rank, world_size)
        self.dataset = dataset
        self._perms: dict[int, torch.Tensor] = {}
        self._pending = None  # ((epoch, index) the prefetched batch starts at, future)
        self._prefetcher = ThreadPoolExecutor(1, thread_name_prefix="kinetics-prefetch") if dataset.prefetch else None

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}  # keep two epochs at most
            self._perms[epoch] = torch.randperm(len(self.dataset), generator=generator(EPOCH, self.seed, epoch))
        return self._perms[epoch]

    def _jobs(self, epoch: int, index: int) -> tuple[list, tuple[int, int]]:
        """This rank's jobs of the world batch starting at (epoch, index), and the position after it."""
        jobs, want = [], self.batch_size * self.world_size
        while len(jobs) < want:
            perm = self._perm(epoch)
            take = min(want - len(jobs), len(perm) - index)
            jobs += [(int(perm[p]), (CLIP, self.seed, epoch, p), False) for p in range(index, index + take)]
            index += take
            if index == len(perm):
                epoch, index = epoch + 1, 0
        return jobs[self.rank * self.batch_size:(self.rank + 1) * self.batch_size], (epoch, index)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        here = (self.epoch, self.index)
        jobs, after = self._jobs(*here)
        pending, self._pending = self._pending, None
        batch = pending[1].result() if pending is not None and pending[0] == here else self.dataset.load(jobs)
        self.epoch, self.index = after
        if self._prefetcher is not None:  # the next batch is known already: decode it while this one trains
            self._pending = (after, self._prefetcher.submit(self.dataset.load, self._jobs(*after)[0]))
        return batch

    def load_state_dict(self, state: dict[str, int]) -> None:
        super().load_state_dict(state)
        self._perms, self._pending = {}, None  # the seed may have changed; the prefetch is from the old position
