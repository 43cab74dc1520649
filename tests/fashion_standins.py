"""Tiny Fashion-MNIST stand-ins: IDX files written from the format's definition, plain or gzipped.

Tests never need the real files (Debian's dataset-fashion-mnist); these hold a few images of known pixels.
"""

from __future__ import annotations

import functools
import gzip
import struct
import tempfile
from pathlib import Path

import numpy as np

IMAGE_FILES = {"train": "train-images-idx3-ubyte", "heldout": "t10k-images-idx3-ubyte"}
LABEL_FILES = {"train": "train-labels-idx1-ubyte", "heldout": "t10k-labels-idx1-ubyte"}
HELDOUT_OFFSET = 128


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: 0x00 0x00, type 0x08, ndim, the big-endian sizes, then the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gzipped: bool = False) -> Path:
    data = idx_bytes(array)
    path = Path(f"{path}.gz") if gzipped else Path(path)
    path.write_bytes(gzip.compress(data, mtime=0) if gzipped else data)
    return path


def tiny_images(n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) images whose pixels encode their index (pixel [i, r, c] = (i + offset + r + c) % 256),
    and labels (i + offset) % 10: images with indices i + offset below 256 are all different."""
    index = np.arange(n)[:, None, None] + offset
    images = (index + np.arange(28)[None, :, None] + np.arange(28)[None, None, :]) % 256
    return images.astype(np.uint8), ((np.arange(n) + offset) % 10).astype(np.uint8)


def write_fashion_root(root: Path, n_train: int = 60, n_heldout: int = 60, gzipped: bool = False) -> Path:
    """A data.path with the four files: train images of indices 0.., held-out ones of 128.. (up to 128 each, so
    no held-out image equals a training image)."""
    assert n_train <= HELDOUT_OFFSET and n_heldout <= 256 - HELDOUT_OFFSET
    root.mkdir(parents=True, exist_ok=True)
    for split, n, offset in (("train", n_train, 0), ("heldout", n_heldout, HELDOUT_OFFSET)):
        images, labels = tiny_images(n, offset)
        write_idx(root / IMAGE_FILES[split], images, gzipped)
        write_idx(root / LABEL_FILES[split], labels, gzipped)
    return root


@functools.lru_cache(maxsize=None)
def standin_fashion_root() -> str:
    """One stand-in data.root per test process, for the registry-wide dataset and metric tests (120 held-out
    images: the metric contract test draws 100)."""
    return str(write_fashion_root(Path(tempfile.mkdtemp(prefix="flowzoo-fashion-")) / "fashion", n_train=120,
                                  n_heldout=120, gzipped=True))
