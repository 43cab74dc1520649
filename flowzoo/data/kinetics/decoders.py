"""Video decoders with one contract: frames as uint8 RGB tensors (F, H, W, 3), frame i = the i-th frame in
presentation order. Two are built in, selected by name (`data.decoder`):

    pyav    PyAV (FFmpeg bindings; a core dependency): decodes sequentially from the start of the file.
    decord  decord's VideoReader: builds a frame index and seeks, often faster on long videos.

Both convert with FFmpeg's swscale from the stream's YUV to rgb24 at the stored size (no resizing, no
colour-matrix or rotation handling), so they return identical frames; tests/test_kinetics_data.py checks
exact equality on H.264 yuv420p files with B-frames and several keyframes, and on yuv420p/yuvj420p/bt709
tagged files we measured max |difference| = 0. Resizing and cropping happen afterwards, in our own code,
for the same reason. Known limit: decord 0.6.0 fails on some small frame widths (16, 24, 48, 72 px);
such files are then reported as unreadable under decord and read fine under pyav.

Each call opens the file, so decoders are stateless and safe to call from a thread pool: FFmpeg decodes
with the GIL released in both libraries, which is what makes `workers` threads parallel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

Pick = Callable[[int], Sequence[int]]  # number of frames -> the sorted frame indices to read


class Decoder:
    """Base: `read_clip(path, pick)` opens the file once, asks `pick(num_frames)` which frames, reads them."""

    name = "base"

    def __init__(self, threads: int = 1):
        # One FFmpeg thread per file by default: parallelism comes from decoding several files at once.
        self.threads = int(threads)

    def read_clip(self, path: str | Path, pick: Pick) -> torch.Tensor:
        raise NotImplementedError

    def num_frames(self, path: str | Path) -> int:
        return self._num_frames(path)

    def read_frames(self, path: str | Path, indices: Sequence[int]) -> torch.Tensor:
        """(len(indices), H, W, 3) uint8 for sorted, distinct frame indices."""
        return self.read_clip(path, lambda n: indices)

    def _num_frames(self, path: str | Path) -> int:
        raise NotImplementedError


def _check_indices(indices: Sequence[int], n: int, path: str | Path) -> list[int]:
    idx = [int(i) for i in indices]
    if any(b <= a for a, b in zip(idx, idx[1:])):
        raise ValueError(f"frame indices must be sorted and distinct, got {idx[:8]}...")
    if idx and (idx[0] < 0 or idx[-1] >= n):
        raise IndexError(f"{path} has {n} frames; frame {idx[-1] if idx[-1] >= n else idx[0]} does not exist.")
    return idx


class PyAVDecoder(Decoder):
    """Sequential decode up to the last wanted frame. Why not seek: Kinetics clips re-encoded by the usual
    downloaders have one keyframe per 10 s clip, so a seek lands on frame 0 anyway, and sequential
    decoding needs no pts -> index mapping (exact for any timestamps)."""

    name = "pyav"

    def _open(self, path):
        import av

        container = av.open(str(path))
        if not container.streams.video:
            container.close()
            raise ValueError(f"{path} has no video stream.")
        stream = container.streams.video[0]
        stream.thread_count = self.threads
        return container, stream

    def _num_frames(self, path) -> int:
        container, stream = self._open(path)
        try:
            return _stream_frames(container, stream)
        finally:
            container.close()

    def read_clip(self, path, pick: Pick) -> torch.Tensor:
        container, stream = self._open(path)
        try:
            n = _stream_frames(container, stream)
            idx = _check_indices(pick(n), n, path)
            if not idx:
                return torch.zeros(0, stream.codec_context.height, stream.codec_context.width, 3, dtype=torch.uint8)
            if stream.frames <= 0:  # counting demuxed the file: start again from the beginning
                container.close()
                container, stream = self._open(path)
            wanted, out = set(idx), []
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    out.append(frame.to_ndarray(format="rgb24"))
                if i >= idx[-1]:
                    break
            if len(out) != len(idx):
                raise ValueError(f"{path} ended after {i + 1} decoded frames, before frame {idx[-1]}.")
            return torch.from_numpy(np.stack(out))
        finally:
            container.close()


def _stream_frames(container, stream) -> int:
    """The container's frame count; where it has none (some mkv/webm), the number of video packets."""
    if stream.frames > 0:
        return int(stream.frames)
    return sum(1 for packet in container.demux(stream) if packet.size)


class DecordDecoder(Decoder):
    """decord.VideoReader with accurate seeking (get_batch); imported on first use."""

    name = "decord"

    def __init__(self, threads: int = 1):
        super().__init__(threads)
        try:
            import decord  # noqa: F401
        except ImportError:
            raise ValueError("the decord decoder needs the decord package: pip install decord (or use data.decoder=pyav).") from None

    def _reader(self, path):
        import decord

        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=self.threads)

    def _num_frames(self, path) -> int:
        return len(self._reader(path))

    def read_clip(self, path, pick: Pick) -> torch.Tensor:
        reader = self._reader(path)
        idx = _check_indices(pick(len(reader)), len(reader), path)
        if not idx:
            h, w = reader[0].shape[:2] if len(reader) else (0, 0)
            return torch.zeros(0, h, w, 3, dtype=torch.uint8)
        return torch.from_numpy(np.ascontiguousarray(reader.get_batch(idx).asnumpy()))


DECODERS: dict[str, type[Decoder]] = {"pyav": PyAVDecoder, "decord": DecordDecoder}


def get_decoder(name: str, threads: int = 1) -> Decoder:
    """The decoder called `name` (pyav or decord); ValueError with one sentence for anything else."""
    if name not in DECODERS:
        raise ValueError(f"unknown video decoder {name!r}; valid: {', '.join(DECODERS)}.")
    return DECODERS[name](threads)
