"""scikit-learn's digits: 1,797 grey 8x8 images of 10 classes, bundled with sklearn (no download).

Pixels 0..16 are mapped to [-1, 1] by x = p / 8 - 1 (background -1); sample_shape (1, 8, 8).

Split (fixed forever; the shipped digits classifier and every reported number depend on it): for each
class c, its indices in load_digits order are permuted by numpy.random.default_rng(SPLIT_SEED + c) and
the first HELDOUT_PER_CLASS = 30 go to held-out: 300 held-out images (30 per class), 1,497 train.
Training streams see only the train split; `reference()` returns held-out images, never trained on.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import torch

from flowzoo.data.stream import REFERENCE, EpochStream, generator
from flowzoo.registry import DATASETS

SPLIT_SEED = 20_251_127
HELDOUT_PER_CLASS = 30
NUM_CLASSES = 10


@functools.lru_cache(maxsize=1)
def _load() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x in [-1, 1] (1797, 1, 8, 8), y (1797,), held-out mask (1797,)), cached per process."""
    from sklearn.datasets import load_digits  # deferred: sklearn import costs ~1 s

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    heldout = torch.zeros(len(y), dtype=torch.bool)
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(bunch.target == c)
        chosen = np.random.default_rng(SPLIT_SEED + c).permutation(idx)[:HELDOUT_PER_CLASS]
        heldout[torch.from_numpy(chosen)] = True
    return x, y, heldout


def split_indices() -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices) into load_digits() order, each sorted."""
    heldout = _load()[2]
    return torch.nonzero(~heldout).squeeze(1), torch.nonzero(heldout).squeeze(1)


def split_fingerprint() -> str:
    """sha256 of the held-out indices (int64): pins the split that the shipped classifier was trained around."""
    return hashlib.sha256(split_indices()[1].numpy().astype(np.int64).tobytes()).hexdigest()


@DATASETS.register("digits")
class Digits:
    """Class-conditional 8x8 digits; train split for training, held-out split for evaluation."""

    name = "digits"
    sample_shape = (1, 8, 8)
    num_classes = NUM_CLASSES

    def train_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of the 1,497 training images."""
        x, y, heldout = _load()
        return x[~heldout], y[~heldout]

    def heldout_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of the 300 held-out images (30 per class), in load_digits order."""
        x, y, heldout = _load()
        return x[heldout], y[heldout]

    def stream(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> EpochStream:
        x, y = self.train_tensors()
        return EpochStream(x, y, batch_size, seed, rank, world_size)

    def reference(self, n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """n held-out images (all 300 when n is None or 300; otherwise a seeded random subset)."""
        x, y = self.heldout_tensors()
        if n is None or n == len(x):
            return x, y
        if not 0 < n <= len(x):
            raise ValueError(f"digits has {len(x)} held-out images; ask reference() for 1..{len(x)} of them, not {n}.")
        idx = torch.randperm(len(x), generator=generator(REFERENCE, seed))[:n]
        return x[idx], y[idx]

    def class_means(self) -> torch.Tensor:
        """(10, 1, 8, 8): the mean training image of each class (a degenerate 'generator' for baselines)."""
        x, y = self.train_tensors()
        return torch.stack([x[y == c].mean(dim=0) for c in range(NUM_CLASSES)])

    def __repr__(self) -> str:
        return "Digits()"
