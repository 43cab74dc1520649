"""The fashion_mnist metric and its classifier: the shipped pair's record, `prepare fashion-classifier`, and
the metric's identities, floors and sharding on stand-in IDX files.

The shipped classifier knows real Fashion-MNIST, not the stand-ins' synthetic pictures, so the metric tests
judge with a classifier trained here (seconds) on stand-ins whose classes a CNN can tell apart: class c is a
bright block at its own place, over noise. The real files are used only where Debian's package is installed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fashion_standins import IMAGE_FILES, LABEL_FILES, write_fashion_root, write_idx
from flowzoo.data.fashion_mnist import DEFAULT_ROOT, FashionMNIST
from flowzoo.eval import create_metric
from flowzoo.eval.classifier import accuracy
from flowzoo.eval.fashion_classifier import DEFAULT_PATH, load_fashion_classifier, train_fashion_classifier
from flowzoo.eval.fashion_metrics import FashionMetrics
from flowzoo.eval.fid import sha256_file
from test_cli import flowzoo

PER_CLASS = 20  # stand-in images per class and split: 200 train, 200 held-out


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def block_images(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(10 n, 28, 28) uint8 images: noise 0..60, plus class c's 6x6 block of 255 at (4 + 10 (c // 5), 2 + 5 (c % 5))."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(10), n_per_class).astype(np.uint8)
    images = rng.integers(0, 61, size=(len(labels), 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        row, col = 4 + 10 * (c // 5), 2 + 5 * (c % 5)
        images[i, row:row + 6, col:col + 6] = 255
    return images, labels


@pytest.fixture(scope="module")
def blocks(tmp_path_factory) -> FashionMNIST:
    root = tmp_path_factory.mktemp("blocks")
    for split, seed in (("train", 0), ("heldout", 1)):
        images, labels = block_images(PER_CLASS, seed)
        write_idx(root / IMAGE_FILES[split], images)
        write_idx(root / LABEL_FILES[split], labels)
    return FashionMNIST(root)


@pytest.fixture(scope="module")
def judge(blocks, tmp_path_factory) -> Path:
    """A classifier trained on the blocks' train split (30 passes of 2 batches: a few seconds)."""
    path = tmp_path_factory.mktemp("judge") / "judge.safetensors"
    record = train_fashion_classifier(path, seed=0, epochs=30, root=blocks.root)
    assert record["heldout_accuracy"] >= 0.95, record
    return path


@pytest.fixture(scope="module")
def metric(judge) -> FashionMetrics:
    return FashionMetrics(seed=0, classifier_path=judge)


# -- the shipped classifier and `prepare` -----------------------------------------------------------

def test_shipped_record_names_the_shipped_weights():
    record = json.loads(DEFAULT_PATH.with_suffix(".json").read_text())
    assert record["sha256"] == sha256_file(DEFAULT_PATH)
    assert record["command"].startswith("flowzoo prepare fashion-classifier")
    assert f"--seed {record['seed']}" in record["command"] and f"--epochs {record['epochs']}" in record["command"]
    assert record["num_train"] == 60_000 and record["num_heldout"] == 10_000 and record["heldout_accuracy"] >= 0.88
    assert DEFAULT_PATH.stat().st_size < 1_000_000
    load_fashion_classifier.cache_clear()
    assert load_fashion_classifier() is not None  # the hash check passes


@pytest.mark.skipif(not Path(DEFAULT_ROOT).is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_shipped_classifier_has_its_recorded_t10k_accuracy():
    data = FashionMNIST()
    record = json.loads(DEFAULT_PATH.with_suffix(".json").read_text())
    from flowzoo.eval.fashion_classifier import split_sha256

    assert split_sha256(data, "heldout") == record["heldout_sha256"]
    acc = accuracy(load_fashion_classifier(), *data.heldout_tensors())
    assert math.isclose(acc, record["heldout_accuracy"], abs_tol=1e-6)


def test_prepare_on_standin_files_writes_a_loadable_pair(tmp_path, capsys):
    root = write_fashion_root(tmp_path / "fm", n_train=40, n_heldout=20, gzipped=True)
    out = tmp_path / "assets" / "fc.safetensors"
    code, stdout, err = flowzoo("prepare", "fashion-classifier", "--epochs", "1", "--data", str(root),
                                "--out", str(out), capsys=capsys)
    assert code == 0, err
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["sha256"] == sha256_file(out) and record["epochs"] == 1 and record["num_train"] == 40
    assert f"--data {root.as_posix()}" in record["command"] and "t10k accuracy" in stdout
    assert load_fashion_classifier(out) is not None


def test_training_is_deterministic(blocks, tmp_path):
    a = train_fashion_classifier(tmp_path / "a.safetensors", seed=3, epochs=1, root=blocks.root)
    b = train_fashion_classifier(tmp_path / "b.safetensors", seed=3, epochs=1, root=blocks.root)
    c = train_fashion_classifier(tmp_path / "c.safetensors", seed=4, epochs=1, root=blocks.root)
    assert a["sha256"] == b["sha256"] != c["sha256"]


# -- the metric -------------------------------------------------------------------------------------

def test_supports_fashion_only(blocks, metric):
    from flowzoo.data import create_dataset

    assert metric.supports(blocks) and not metric.supports(create_dataset("digits"))
    assert "fashion_mnist" in create_metric("fashion_mnist").name


def test_fd_of_the_reference_with_itself_is_zero(blocks, judge):
    held_x, held_y = blocks.heldout_tensors()
    split = FashionMetrics(classifier_path=judge)._split(blocks)
    assert len(split["floor"]) == len(split["reference"]) == 100  # half of each class: 10 per class each
    assert set(split["floor"].tolist()).isdisjoint(split["reference"].tolist())
    ref = split["reference"]
    itself = FashionMetrics(classifier_path=judge, num_fd_samples=len(ref))
    assert itself(held_x[ref], held_y[ref], blocks)["fd"] < 1e-8


def test_floor_class_means_and_train_rows(blocks, metric):
    ref = metric.reference(blocks)
    assert ref["heldout/class_acc"] >= 0.95 and ref["heldout/memorisation"] == 1.0
    assert ref["class_means/class_acc"] >= 0.95  # near-perfect accuracy ...
    assert ref["class_means/fd"] > 3 * ref["heldout/fd"]  # ... from a useless generator
    assert ref["train/memorisation"] == 0.0  # copies: exactly 0 (the nearest distance is recomputed exactly)
    assert ref["train/fd"] < 3 * ref["heldout/fd"]  # the reference is held-out: copying does not beat the floor much
    assert all(math.isfinite(v) for v in ref.values())


def test_fd_grows_with_noise_and_shift(blocks, metric):
    split = metric._split(blocks)
    held_x, held_y = blocks.heldout_tensors()
    x, y = held_x[split["floor"]], held_y[split["floor"]]
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=gen)
    with pytest.warns(UserWarning):  # 100 samples, not the default 2,000
        fds = [metric(x + sigma * noise, y, blocks)["fd"] for sigma in (0.0, 0.3, 1.0)]
        shifted = metric(torch.roll(x, shifts=4, dims=-1), y, blocks)["fd"]
    assert fds[0] < fds[1] < fds[2] and fds[2] > 3 * fds[0]
    assert shifted > 3 * fds[0]


def test_class_acc_counts_conditioning_labels(blocks, metric):
    held_x, held_y = blocks.heldout_tensors()
    with pytest.warns(UserWarning):
        right = metric(held_x, held_y, blocks)
        wrong = metric(held_x, (held_y + 1) % 10, blocks)
        unconditional = metric(held_x, torch.full_like(held_y, 10), blocks)  # null labels only
    assert right["class_acc"] >= 0.95 and wrong["class_acc"] <= 0.05
    assert "class_acc" not in unconditional and right["class_entropy"] > 0.99


def test_sharded_summaries_finish_to_the_one_shot_numbers(blocks, metric):
    held_x, held_y = blocks.heldout_tensors()
    x = held_x + 0.2 * torch.randn(held_x.shape, generator=torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning):
        whole = metric(x, held_y, blocks)
        cuts = [0, 37, 120, 200]  # uneven, contiguous shares in index order, as ranks hold them
        parts = [metric.summarise(x[a:b], held_y[a:b], blocks) for a, b in zip(cuts, cuts[1:])]
        sharded = metric.finish(parts, blocks)
    assert sharded.keys() == whole.keys()
    assert all(math.isclose(sharded[k], whole[k], rel_tol=1e-6, abs_tol=1e-9) for k in whole)
    assert "images" not in parts[0] and parts[0]["features"].shape == (37, 64)  # features travel, not images


def test_info_names_extractor_and_reference(blocks, metric, judge):
    info = metric.info(blocks)
    assert info["extractor_weights_sha256"] == sha256_file(judge) and len(info["reference_sha256"]) == 64
    assert info["num_samples"] == metric.num_fd_samples


def test_config_samples_as_many_as_the_floor_set():
    from flowzoo.config import load_yaml
    from flowzoo.eval.fashion_metrics import NUM_SAMPLES

    config = load_yaml(Path(__file__).resolve().parent.parent / "configs" / "data" / "fashion_mnist.yaml")
    assert config["eval"]["num_samples"] == NUM_SAMPLES == FashionMetrics().num_fd_samples
