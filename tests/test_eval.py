"""Evaluation metrics: identities (FD of a set with itself, closed forms), noise floors, the shipped classifier."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

import flowzoo.data  # noqa: F401  (fills DATASETS)
import flowzoo.eval  # noqa: F401  (fills METRICS)
from flowzoo.data import create_dataset
from flowzoo.eval import (
    balanced_labels, create_metric, frechet_distance, gaussian_stats, load_digits_classifier, mmd_rbf, mode_coverage,
    save_image_grid, save_toy_scatter, sliced_wasserstein, train_digits_classifier,
)
from flowzoo.eval.digits_classifier import DEFAULT_PATH, accuracy
from flowzoo.registry import DATASETS, METRICS
from imagenet_standins import dataset_for_tests  # stand-in data where a dataset needs the user's


@pytest.fixture(scope="module")
def digits():
    return create_dataset("digits")


@pytest.fixture(scope="module")
def digits_metric():
    return create_metric("digits", seed=0)


# -- Frechet distance ------------------------------------------------------------------------------

def test_fd_of_a_set_with_itself_is_zero():
    feats = torch.randn(300, 64, generator=torch.Generator().manual_seed(0))
    stats = gaussian_stats(feats)
    assert frechet_distance(*stats, *stats) < 1e-8


def test_fd_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    var1, var2 = rng.uniform(0.1, 3, size=16), rng.uniform(0.1, 3, size=16)
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert math.isclose(frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)), closed, rel_tol=1e-10)


def test_fd_matches_scipy_sqrtm_for_full_and_singular_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(3, 8))  # b: rank 3, singular
    cov1, cov2 = a @ a.T, b.T @ b
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    cross = np.real(scipy.linalg.sqrtm(cov1 @ cov2)).trace()
    expected = ((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * cross
    assert math.isclose(frechet_distance(mu1, cov1, mu2, cov2), expected, rel_tol=1e-6)


# -- 2-D toys --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["toy:checkerboard", "toy:8gaussians", "toy:moons", "toy:spirals"])
def test_toy_metrics_floor_and_shift(name):
    data, metric = create_dataset(name), create_metric("toy2d", seed=0, num_samples=1000)
    floor = metric.reference(data)
    real = metric(data.reference(1000, seed=42)[0], None, data)
    shifted = metric(data.reference(1000, seed=42)[0] + 1.0, None, data)
    for key in ("swd", "mmd"):
        assert real[key] < 2.5 * floor[f"real/{key}"], key
        assert shifted[key] > 5 * floor[f"real/{key}"], key
    if "support_frac" in real:
        assert real["support_frac"] > 0.97 and floor["real/support_frac"] > 0.97
        assert metric(data.reference(1000, 42)[0] + 100.0, None, data)["support_frac"] == 0.0


def test_mode_coverage():
    data, metric = create_dataset("toy:8gaussians"), create_metric("toy2d", num_samples=500)
    assert metric(data.reference(500, 3)[0], None, data)["mode_coverage"] == 8
    one_mode = data.mode_centers[2] + data.mode_std * torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    assert metric(one_mode, None, data)["mode_coverage"] == 1


def test_mode_coverage_refuses_a_ring_between_the_modes():
    # The failure it was fixed for: samples on a ring of the right radius, at angles between the modes.
    data = create_dataset("toy:8gaussians")
    g = torch.Generator().manual_seed(0)
    n = 2000
    between = (torch.arange(n) % 8) * (2 * math.pi / 8) + math.pi / 8  # mid-way between neighbouring centres
    angle = between + (torch.rand(n, generator=g) - 0.5) * 0.8  # +-0.4 rad: reaches into the modes' 3-std discs
    radius = data.radius + data.mode_std * torch.randn(n, generator=g)
    ring = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    modes, distance = data.nearest_mode(ring)
    inside = data.in_support(ring)
    old_rule = int((torch.bincount(modes[inside], minlength=8) >= 0.01 * n).sum())  # >= 1% of samples in support
    assert inside.float().mean() > 0.5 and old_rule == 8  # the old rule said 8 of 8
    assert mode_coverage(modes, distance, 8, data.mode_std) <= 1
    # True samples put 86.5% of each mode's mass within 2 std: all 8 count.
    real_modes, real_distance = data.nearest_mode(data.reference(n, 5)[0])
    assert mode_coverage(real_modes, real_distance, 8, data.mode_std) == 8


def test_swd_and_mmd_are_seeded_and_zero_on_identical_sets():
    x = torch.randn(400, 2, generator=torch.Generator().manual_seed(0))
    assert sliced_wasserstein(x, x) == 0.0 and mmd_rbf(x, x) < 1e-6
    y = x + 0.3
    assert sliced_wasserstein(x, y, seed=1) == sliced_wasserstein(x, y, seed=1)


# -- digits ----------------------------------------------------------------------------------------

def test_shipped_classifier_loads_with_hash_and_is_accurate(digits):
    record = json.loads(DEFAULT_PATH.with_suffix(".json").read_text())
    assert record["heldout_split_sha256"] == flowzoo.data.digits.split_fingerprint()
    acc = accuracy(load_digits_classifier(), *digits.heldout_tensors())
    assert acc >= 0.97 and math.isclose(acc, record["heldout_accuracy"], abs_tol=1e-6)


def test_tampered_weights_are_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    shutil.copy(DEFAULT_PATH, path)
    shutil.copy(DEFAULT_PATH.with_suffix(".json"), path.with_suffix(".json"))
    load_digits_classifier(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    load_digits_classifier.cache_clear()
    with pytest.raises(ValueError, match="sha256"):
        load_digits_classifier(path)
    with pytest.raises(FileNotFoundError, match="rebuild"):
        load_digits_classifier(tmp_path / "missing.safetensors")


def test_training_writes_a_consistent_record(tmp_path):
    record = train_digits_classifier(tmp_path / "c.safetensors", seed=0, epochs=1)
    assert load_digits_classifier(tmp_path / "c.safetensors") is not None  # hash check passes
    assert record["num_train"] == 1497 and "--seed 0" in record["command"]


def test_digits_reference_points(digits, digits_metric):
    ref = digits_metric.reference(digits)
    assert ref["heldout/class_acc"] >= 0.97 and ref["heldout/memorisation"] == 1.0
    assert ref["class_means/class_acc"] >= 0.97  # near-perfect accuracy ...
    assert ref["class_means/fd"] > 5 * ref["heldout/fd"]  # ... from a useless generator
    assert ref["train/memorisation"] == 0.0 and ref["train/fd"] < ref["heldout/fd"]


def test_memorisation_ratio(digits, digits_metric):
    train_x, train_y = digits.train_tensors()
    copy = digits_metric(train_x[:300], train_y[:300], digits)
    assert copy["memorisation"] < 1e-6
    held = digits_metric(*digits.heldout_tensors(), digits)
    assert math.isclose(held["memorisation"], 1.0, rel_tol=1e-9)


def test_digits_metric_on_noise_is_bad(digits, digits_metric):
    labels = balanced_labels(300)
    noise = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = digits_metric(noise, labels, digits)
    assert out["fd"] > 10 * digits_metric.reference(digits)["heldout/fd"] and out["class_acc"] < 0.5
    assert "class_acc" not in digits_metric(noise, torch.full((300,), 10), digits)  # null labels only


# -- every registered metric on every dataset it supports ------------------------------------------

@pytest.mark.parametrize("metric_name", METRICS.names())
def test_registered_metric_contract(metric_name):
    metric = create_metric(metric_name, seed=0)
    supported = [d for d in (dataset_for_tests(n) for n in DATASETS.names()) if metric.supports(d)]
    assert supported, f"{metric_name} supports no registered dataset"
    for data in supported:
        x, y = data.reference(100, seed=1)
        with pytest.warns(UserWarning):  # fewer samples than the floor was measured with
            out = metric(x, y if data.num_classes else None, data)
        assert out and all(isinstance(v, float) and math.isfinite(v) for v in out.values())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert out == metric(x, y if data.num_classes else None, data)  # deterministic
        ref = metric.reference(data)
        assert all("/" in k and math.isfinite(v) for k, v in ref.items())


def test_plots_write_pngs(tmp_path, digits):
    grid = save_image_grid(digits.heldout_tensors()[0][:20], tmp_path / "grid.png", nrow=10)
    data = create_dataset("toy:moons")
    scatter = save_toy_scatter(data.reference(500, 0)[0], data.reference(500, 1)[0], tmp_path / "s.png", title="moons")
    for path in (grid, scatter):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
