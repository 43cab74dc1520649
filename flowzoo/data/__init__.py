"""Datasets: registered by name in DATASETS; built in are the 2-D toys, scikit-learn's digits and Fashion-MNIST
(read from the user's IDX files; see fashion_mnist.py).

A dataset object has
    sample_shape: tuple            shape of one sample, e.g. (2,) or (1, 8, 8)
    num_classes: int               0 for unconditional data (labels are then all 0, the null label)
    stream(batch_size, seed, rank=0, world_size=1) -> DataStream    resumable training batches
    reference(n, seed) -> (x, y)   fresh real samples for evaluation, never trained on
and digits and fashion_mnist also `train_tensors()`, `heldout_tensors()`, `class_means()`.
"""

from __future__ import annotations

import difflib

from flowzoo.data.digits import Digits
from flowzoo.data.fashion_mnist import FashionMNIST
from flowzoo.data.imagenet import ImageNetLatents  # registers imagenet256
from flowzoo.data.kinetics import kinetics700  # registers kinetics700
from flowzoo.data.stream import DataStream, EpochStream, SampledStream, derive_seed, generator
from flowzoo.data.toy2d import Checkerboard, EightGaussians, Moons, Spirals, Toy2D
from flowzoo.registry import DATASETS

__all__ = [
    "create_dataset", "parse_data_name", "list_datasets", "DataStream", "EpochStream", "SampledStream",
    "derive_seed", "generator", "Digits", "FashionMNIST", "Toy2D", "Checkerboard", "EightGaussians", "Moons", "Spirals",
]


def list_datasets() -> list[str]:
    return DATASETS.names()


def parse_data_name(name: str) -> str:
    """Validate a `--data` value and return the registered name ("moons" is accepted for "toy:moons").

    Raises ValueError with one sentence listing the valid names for anything else.
    """
    names = DATASETS.names()
    name = str(name).strip()
    if name in names:
        return name
    if f"toy:{name}" in names:
        return f"toy:{name}"
    close = difflib.get_close_matches(name, names, n=2, cutoff=0.5)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    raise ValueError(f"unknown dataset {name!r}{hint}; valid names are: {', '.join(names)}.")


def create_dataset(name: str, **kwargs):
    """The dataset registered as `name` (validated by parse_data_name), constructed with kwargs."""
    return DATASETS.get(parse_data_name(name))(**kwargs)


def dataset_from_config(data: dict):
    """The dataset a resolved config's `data` section describes: {name: ..., **the dataset's arguments}."""
    return create_dataset(data["name"], **{k: v for k, v in data.items() if k != "name"})
