"""Built-in datasets: the contract for every registered dataset, determinism, exact resume, the digits split."""

from __future__ import annotations

import pytest
import torch

import flowzoo.data  # noqa: F401  (fills DATASETS)
from flowzoo.data import EpochStream, create_dataset, parse_data_name
from flowzoo.data.digits import split_fingerprint, split_indices
from flowzoo.registry import DATASETS
from imagenet_standins import dataset_for_tests  # registry-wide tests: stand-in data where a dataset needs the user's

BUILTIN = ["digits", "toy:8gaussians", "toy:checkerboard", "toy:moons", "toy:spirals"]
TOYS = [n for n in BUILTIN if n.startswith("toy:")]


def draw(stream, k):
    return [stream.next() for _ in range(k)]


def test_builtins_registered():
    assert set(BUILTIN) <= set(DATASETS.names())


@pytest.mark.parametrize("name", DATASETS.names())
def test_contract(name):
    data = dataset_for_tests(name)
    x, y = data.stream(batch_size=16, seed=0).next()
    assert x.shape == (16, *data.sample_shape) and x.dtype == torch.float32
    assert y.shape == (16,) and y.dtype == torch.long
    assert ((y >= 0) & (y <= max(data.num_classes - 1, 0))).all()
    rx, ry = data.reference(32, seed=0)
    assert rx.shape == (32, *data.sample_shape) and ry.dtype == torch.long


@pytest.mark.parametrize("name", DATASETS.names())
def test_deterministic_and_seed_dependent(name):
    data = dataset_for_tests(name)
    a, b, c = (draw(data.stream(64, seed), 3) for seed in (5, 5, 6))
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    assert torch.equal(data.reference(50, 1)[0], data.reference(50, 1)[0])


@pytest.mark.parametrize("name", DATASETS.names())
@pytest.mark.parametrize("batch_size", [7, 500])  # 500: digits batches straddle epochs (1,497 train images)
def test_resume_draws_the_same_batches(name, batch_size):
    data = dataset_for_tests(name)
    uninterrupted = draw(data.stream(batch_size, seed=3), 9)
    first = data.stream(batch_size, seed=3)
    draw(first, 4)
    state = first.state_dict()
    resumed = data.stream(batch_size, seed=999)  # the seed comes back from the state
    resumed.load_state_dict(state)
    for (x0, y0), (x1, y1) in zip(uninterrupted[4:], draw(resumed, 5)):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_resume_refuses_another_batch_size():
    data = create_dataset("toy:moons")
    state = data.stream(8, seed=0).state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        data.stream(16, seed=0).load_state_dict(state)


def test_ranks_split_the_world_batch():
    x = torch.arange(20).float()[:, None]
    y = torch.arange(20)
    ranks = [EpochStream(x, y, batch_size=5, seed=0, rank=r, world_size=2) for r in range(2)]
    epoch = torch.cat([torch.cat([s.next()[1] for s in ranks]) for _ in range(2)])
    assert sorted(epoch.tolist()) == list(range(20))  # one epoch, every index once, no overlap


@pytest.mark.parametrize("name", TOYS)
def test_toy_scale_and_labels(name):
    data = dataset_for_tests(name)
    x, y = data.reference(20_000, seed=0)
    assert data.num_classes == 0 and (y == 0).all()
    assert x.mean(dim=0).abs().max() < 0.05
    assert abs(x.var(dim=0).mean().item() - 1.0) < 0.05  # trace(Cov)/2 = 1 by construction


def test_toy_supports():
    board = create_dataset("toy:checkerboard")
    x = board.reference(5000, 0)[0]
    assert x.abs().max() <= 3 ** 0.5 and board.in_support(x).all()
    assert not board.in_support(x * torch.tensor([-1.0, 1.0])).any()  # a mirror maps filled cells to empty
    gauss = create_dataset("toy:8gaussians")
    assert 0.97 < gauss.in_support(gauss.reference(5000, 0)[0]).float().mean() < 1.0  # 1 - exp(-4.5) = 0.989


def test_digits_values_split_and_classes():
    data = create_dataset("digits")
    assert data.sample_shape == (1, 8, 8) and data.num_classes == 10
    train_x, train_y = data.train_tensors()
    held_x, held_y = data.heldout_tensors()
    assert len(train_x) == 1497 and len(held_x) == 300
    assert train_x.min() == -1 and train_x.max() == 1
    assert torch.bincount(held_y).tolist() == [30] * 10 and set(train_y.tolist()) == set(range(10))
    train_idx, held_idx = split_indices()
    assert not set(train_idx.tolist()) & set(held_idx.tolist())
    assert len(train_idx) + len(held_idx) == 1797
    # The split is fixed forever: the shipped classifier and all reported numbers depend on it.
    assert split_fingerprint().startswith("4b8a6b70695d09d6")
    assert torch.equal(data.reference()[0], held_x)


def test_digits_stream_sees_only_train_images():
    data = create_dataset("digits")
    x, _ = data.stream(1497, seed=0).next()  # exactly one epoch
    train = {tuple(v) for v in data.train_tensors()[0].flatten(1).tolist()}
    assert {tuple(v) for v in x.flatten(1).tolist()} == train
    with pytest.raises(ValueError, match="held-out"):
        data.reference(301)


def test_parse_data_name():
    assert parse_data_name("toy:moons") == "toy:moons"
    assert parse_data_name("moons") == "toy:moons"
    with pytest.raises(ValueError, match="valid names are: .*toy:checkerboard"):
        parse_data_name("toy:moon")
    with pytest.raises(ValueError, match="unknown dataset"):
        create_dataset("mnist")
