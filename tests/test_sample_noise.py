"""Samples depend only on (seed, sample index): every registered sampler gives identical samples at two
batch sizes and on a shard of the indices (what a rank of a sharded evaluation draws), and the starting
noise is the stream evaluation has always drawn (so records of deterministic samplers did not move)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flowzoo.pipeline.evaluate import generate
from flowzoo.registry import SAMPLERS
from flowzoo.samplers.noise import SampleNoise, noise_block, starting_noise


class ToyData:
    def __init__(self, shape, num_classes):
        self.sample_shape, self.num_classes = shape, num_classes


class Curvy(nn.Module):
    """A small nonlinear average-velocity net that uses z, t, h and the label, so every path matters."""

    def __init__(self, dim: int, num_classes: int = 10):
        super().__init__()
        self.num_classes = num_classes
        self.lin = nn.Linear(dim + 2, dim)
        self.emb = nn.Embedding(num_classes + 1, dim)

    def forward(self, z, t, h, y):
        flat = torch.cat([z.flatten(1), t[:, None], h[:, None]], dim=1)
        out = torch.tanh(self.lin(flat)) + (0 if y is None else self.emb(y))
        return out.view_as(z)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_gives_the_same_samples_at_any_batch_size_and_shard(name):
    torch.manual_seed(1)
    data, net = ToyData((3, 4), 10), Curvy(12)
    full, labels = generate(net, data, name, 3, 50, seed=7, batch_size=50)
    small, small_labels = generate(net, data, name, 3, 50, seed=7, batch_size=7)
    shard, shard_labels = generate(net, data, name, 3, 50, seed=7, batch_size=4, indices=list(range(1, 50, 2)))
    # Equal up to float rounding of batched matmuls (BLAS blocks by batch size); a shared noise stream
    # would move samples by O(1).
    torch.testing.assert_close(full, small, rtol=0, atol=1e-5)
    torch.testing.assert_close(full[1::2], shard, rtol=0, atol=1e-5)
    assert torch.equal(labels, small_labels) and torch.equal(labels[1::2], shard_labels)
    other_seed, _ = generate(net, data, name, 3, 50, seed=8, batch_size=50)
    assert (full - other_seed).abs().max() > 0.1


def test_consistency_renoising_is_per_sample_and_differs_by_draw():
    noise = SampleNoise(3, [0, 5, 9])
    first, second = noise.next_like(torch.zeros(3, 4)), noise.next_like(torch.zeros(3, 4))
    assert not torch.equal(first, second)  # a new draw per step
    alone = SampleNoise(3, [5])
    assert torch.equal(alone.next_like(torch.zeros(1, 4))[0], first[1])  # sample 5's draw, whoever is beside it
    with pytest.raises(ValueError, match="holds 3 samples"):
        noise.next_like(torch.zeros(6, 4))


def test_starting_noise_is_the_seeds_stream_in_blocks():
    """Independent computation: the reference stream is torch.randn from a CPU generator seeded with the
    seed, in blocks of noise_block(shape) samples; row i must be row i of that stream."""
    shape = (2,)
    block = noise_block(shape)
    assert block == 1000 and noise_block((3, 4096, 4096)) == 1 and noise_block((4, 32, 32)) == 1000
    g = torch.Generator().manual_seed(11)
    stream = torch.cat([torch.randn(block, *shape, generator=g) for _ in range(3)])
    picks = [2999, 0, 1500, 999, 1000]
    assert torch.equal(starting_noise(11, picks, shape), stream[picks])
    assert starting_noise(11, [], shape).shape == (0, 2)
    assert math.isclose(float(stream.std()), 1.0, abs_tol=0.05)
