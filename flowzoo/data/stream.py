"""Resumable batch streams: every batch is a pure function of (seed, position).

A training run that is killed and resumed must draw exactly the batches it would have drawn
uninterrupted, so a stream never keeps hidden RNG state; its whole position is a few integers
(`state_dict()`), saved in the checkpoint and restored with `load_state_dict()`.

Two kinds:

- `SampledStream` (infinite data, the 2-D toys): batch k is drawn from a torch.Generator seeded
  with derive_seed(STREAM, seed, rank, k).
- `EpochStream` (a finite tensor set, digits): epoch e walks the permutation randperm(N) seeded with
  derive_seed(EPOCH, seed, e) in order; a batch that runs past the end continues into the next
  epoch's permutation, so no sample is dropped and any batch size works.

Under DDP each rank builds its stream with the same seed and its own `rank`: toys draw independent
batches per rank; for finite data the world's batch (batch_size * world_size consecutive indices of the
permutation) is split by rank. The position advances in lockstep, so one rank's state_dict restores all.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

# Tags keep the seed families apart: training batches, epoch permutations and evaluation draws with
# the same user seed never share a random stream.
STREAM, EPOCH, REFERENCE = 1, 2, 3


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that mixes integer keys (tag, seed, position ...) with numpy's SeedSequence hash."""
    if any(int(k) < 0 for k in keys):
        raise ValueError(f"seeds and positions must be non-negative integers, got {keys}.")
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])  # < 2**63, a valid torch seed


def generator(*keys: int) -> torch.Generator:
    """A CPU torch.Generator seeded with derive_seed(*keys)."""
    return torch.Generator().manual_seed(derive_seed(*keys))


class DataStream:
    """Base: `next() -> (x, y)` with y a long tensor; position in `state_dict()`."""

    def __init__(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}.")
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, int(seed), rank, world_size
        self.epoch, self.index = 0, 0

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.next()

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "index": self.index,
                "batch_size": self.batch_size, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # A different batch size or world size would silently draw other batches than the original run.
        for key in ("batch_size", "world_size"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"cannot resume the data stream: the checkpoint was written with {key}={state[key]} "
                    f"but this run uses {key}={getattr(self, key)}; use the original value."
                )
        self.seed, self.epoch, self.index = int(state["seed"]), int(state["epoch"]), int(state["index"])


class SampledStream(DataStream):
    """Infinite data: batch `index` is `sample(batch_size, generator(STREAM, seed, rank, index))`."""

    def __init__(self, sample: Callable[[int, torch.Generator], torch.Tensor], batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        super().__init__(batch_size, seed, rank, world_size)
        self.sample = sample

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.sample(self.batch_size, generator(STREAM, self.seed, self.rank, self.index))
        self.index += 1
        # Unconditional data: label 0 is the null label when num_classes == 0.
        return x, torch.zeros(self.batch_size, dtype=torch.long)


class EpochStream(DataStream):
    """Finite data (x, y): per-epoch permutation from (seed, epoch), walked in order across epochs."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        super().__init__(batch_size, seed, rank, world_size)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}.")
        self.x, self.y = x, y
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:  # cache: one randperm per epoch, not per batch
            self._perm = torch.randperm(len(self.x), generator=generator(EPOCH, self.seed, epoch))
            self._perm_epoch = epoch
        return self._perm

    def _take(self, count: int) -> torch.Tensor:
        """The next `count` indices of the epoch-permutation walk, advancing (epoch, index)."""
        chunks = []
        while count > 0:
            perm = self._permutation(self.epoch)
            take = min(count, len(perm) - self.index)
            chunks.append(perm[self.index:self.index + take])
            self.index += take
            count -= take
            if self.index == len(perm):
                self.epoch, self.index = self.epoch + 1, 0
        return torch.cat(chunks)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        world = self._take(self.batch_size * self.world_size)
        idx = world[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        return self.x[idx], self.y[idx]
