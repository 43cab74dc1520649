"""Noise addressed by (seed, sample index), so samples do not depend on the batch size or the number of ranks.

Two kinds of noise enter sampling:

* the starting noise e at t = 1. Sample i's is row i of one reference stream: `torch.randn` from a CPU
  generator seeded with `seed`, drawn in blocks of `noise_block(shape)` samples. Any batching, or a shard
  of indices on another rank, regenerates the blocks it touches and takes its rows, so row i is the same
  everywhere. (This is the stream flowzoo's evaluation has always drawn, in the same blocks, so the
  committed records of deterministic samplers are unchanged.)
* fresh noise a stochastic sampler draws along the way (the consistency sampler's re-noising).
  `SampleNoise` gives every sample its own generator per draw, seeded from (seed, sample index, draw
  number), as EDM's per-sample generators do (NVlabs/edm2 `generate_images.py`, StackedRandomGenerator):
  sample i's k-th draw is the same whoever else is in its batch.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

MAX_BLOCK = 1000
MAX_BLOCK_ELEMENTS = 2**24


def noise_block(sample_shape: Sequence[int]) -> int:
    """Samples per block of the starting-noise stream: 1000, fewer for big samples (at most 2^24 elements)."""
    return max(1, min(MAX_BLOCK, MAX_BLOCK_ELEMENTS // math.prod(sample_shape)))


def starting_noise(seed: int, indices: Sequence[int], sample_shape: Sequence[int]) -> Tensor:
    """e for the given sample indices (ascending or not), on the CPU in float32: row i of the seed's stream."""
    indices = [int(i) for i in indices]
    if not indices:
        return torch.empty(0, *sample_shape)
    block = noise_block(sample_shape)
    needed = sorted({i // block for i in indices})
    generator = torch.Generator().manual_seed(int(seed))
    blocks: dict[int, Tensor] = {}
    for b in range(needed[-1] + 1):  # a stream cannot skip: earlier blocks are drawn and dropped
        drawn = torch.randn(block, *sample_shape, generator=generator)
        if b in needed:
            blocks[b] = drawn
    return torch.stack([blocks[i // block][i % block] for i in indices])


def _sample_seed(seed: int, index: int, draw: int) -> int:
    """A 64-bit generator seed for one sample's one draw, well mixed (numpy's SeedSequence hash)."""
    state = np.random.SeedSequence([int(seed) & (2**64 - 1), int(index), int(draw)]).generate_state(2, np.uint32)
    return (int(state[0]) | (int(state[1]) << 32)) & (2**63 - 1)


class SampleNoise:
    """Per-sample fresh noise for stochastic samplers: pass it as a sampler's `generator`.

    `next_like(x)` returns noise shaped like x whose row j is sample indices[j]'s next draw. Rows of a
    guided (doubled) batch are not expected: samplers draw for the samples, not for the network call.
    """

    def __init__(self, seed: int, indices: Sequence[int]):
        self.seed = int(seed)
        self.indices = [int(i) for i in indices]
        self.draws = 0

    def next_like(self, like: Tensor) -> Tensor:
        if like.shape[0] != len(self.indices):
            raise ValueError(f"SampleNoise holds {len(self.indices)} samples but was asked for {like.shape[0]} rows.")
        rows = []
        for index in self.indices:
            generator = torch.Generator().manual_seed(_sample_seed(self.seed, index, self.draws))
            rows.append(torch.randn(like.shape[1:], generator=generator))
        self.draws += 1
        return torch.stack(rows).to(device=like.device, dtype=like.dtype)
