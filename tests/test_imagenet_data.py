"""ImageNet-256 pipeline on stand-ins: ADM centre crop, latent cache (kill/resume), latent streams, --data DIR."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers")

from imagenet_standins import SYNSETS, make_image_folder, tiny_vae  # noqa: E402

from flowzoo.config import ConfigError, resolve  # noqa: E402
from flowzoo.data import create_dataset  # noqa: E402
from flowzoo.data.imagenet import center_crop_arr, prepare_latents, read_manifest, scan_image_folder  # noqa: E402

SIZE = 32  # images 32x32 -> latents 4x4x4 with the /8 VAE


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    data, vae = make_image_folder(root / "train"), tiny_vae(root / "vae")
    out = root / "latents"
    prepare_latents(data, str(vae), out, shard_size=5, batch_size=3, flip=True, image_size=SIZE, dtype="float32",
                    progress=False, log=lambda line: None)
    return {"root": root, "data": data, "vae": vae, "out": out}


def test_center_crop_matches_box_halving_and_crop_computed_independently():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)  # H=96, W=128, target 24
    got = center_crop_arr(Image.fromarray(arr), 24)
    # 96 >= 48: halve -> 48x64; 48 >= 48: halve -> 24x32; scale 24/24 = 1; crop columns 4..28.
    x = arr.astype(np.float64)
    for _ in range(2):  # a box filter of exact halves = pair means, rows then columns, stored as 8 bits each pass
        x = np.floor((x[:, 0::2] + x[:, 1::2]) / 2 + 0.5)
        x = np.floor((x[0::2] + x[1::2]) / 2 + 0.5)
    expected = x[:, 4:28]
    assert got.shape == (24, 24, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


def test_center_crop_bicubic_branch_shapes_and_constant_image():
    img = Image.new("RGB", (100, 60), (10, 200, 30))  # 60 >= 2*16: halve to 50x30, then bicubic to 27x16
    got = center_crop_arr(img, 16)
    assert got.shape == (16, 16, 3) and (got == np.array([10, 200, 30], dtype=np.uint8)).all()
    assert center_crop_arr(Image.new("RGB", (20, 300)), 32).shape == (32, 32, 3)  # upsampling, portrait


def test_scan_sorts_synsets_and_prepare_reports_the_corrupt_file(cache):
    index = scan_image_folder(cache["data"])
    assert index.classes == sorted(SYNSETS) and len(index) == 13
    manifest = read_manifest(cache["out"])
    assert manifest["complete"] and manifest["classes"] == sorted(SYNSETS)
    assert [s.endswith("_broken.JPEG") for s in manifest["skipped"]] == [True]
    assert sum(s["count"] for s in manifest["shards"]) == 12 and len(manifest["shards"]) == 3
    lat = np.load(cache["out"] / "shard-00000.latents.npy")
    assert lat.shape == (5, 2, 2, 4, 4, 4) and (lat[:, :, 1] > 0).all()  # (n, flip, mean|std, C, H, W)


def test_prepare_resumes_after_a_kill_to_identical_shards(cache, tmp_path):
    out = tmp_path / "latents"
    kw = dict(shard_size=5, batch_size=3, flip=True, image_size=SIZE, dtype="float32", progress=False, log=lambda s: None)
    first = prepare_latents(cache["data"], str(cache["vae"]), out, stop_after=1, **kw)  # "killed" after 1 shard
    assert not first["complete"] and len(first["shards"]) == 1
    (out / ".shard-00001.latents.npy.tmp-999").write_bytes(b"torn")  # what a kill mid-write leaves
    with pytest.raises(ValueError, match="unfinished"):
        create_dataset("imagenet256", path=str(out))
    final = prepare_latents(cache["data"], str(cache["vae"]), out, **kw)
    assert final["complete"] and final["channel_stats"] == read_manifest(cache["out"])["channel_stats"]
    for k in range(3):
        for part in ("latents", "labels"):
            a, b = (np.load(d / f"shard-{k:05d}.{part}.npy") for d in (out, cache["out"]))
            np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="other settings"):
        prepare_latents(cache["data"], str(cache["vae"]), out, **{**kw, "flip": False})


@pytest.mark.parametrize("normalize", ["sd", "per_channel"])
def test_latent_stream_resumes_exactly_and_draws_fresh_posterior_samples(cache, normalize):
    ds = create_dataset("imagenet256", path=str(cache["out"]), normalize=normalize)
    assert ds.sample_shape == (4, 4, 4) and ds.num_classes == 3 and len(ds) == 24
    full = ds.stream(batch_size=5, seed=3)
    batches = [full.next() for _ in range(7)]  # crosses an epoch boundary
    part = ds.stream(batch_size=5, seed=3)
    for _ in range(4):
        part.next()
    resumed = ds.stream(batch_size=5, seed=3)
    resumed.load_state_dict(part.state_dict())
    for x, y in batches[4:]:
        x2, y2 = resumed.next()
        assert torch.equal(x, x2) and torch.equal(y, y2)
    # Same item twice (epochs 0 and 1): different eps, same posterior mean.
    mean, std, _ = ds.posterior(torch.arange(len(ds)))
    assert (std > 0).all() and not torch.equal(batches[0][0], batches[5][0])
    if normalize == "per_channel":  # the prepared statistics normalise the cache to ~zero mean
        assert ds.normalise(mean).mean(dim=(0, 2, 3)).abs().max() < 0.5


def test_data_dir_resolves_to_imagenet_and_bad_paths_are_one_sentence(cache, tmp_path):
    cfg = resolve(data=str(cache["out"]), config_file="configs/experiment/meanflow-B2.yaml")
    assert cfg["data"] == {"name": "imagenet256", "path": str(cache["out"]), "normalize": "sd", "use_flips": True}
    assert resolve(data="digits")["data"]["name"] == "digits"
    with pytest.raises(ConfigError, match="no latent cache"):
        resolve(data=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="needs its latent cache"):
        create_dataset("imagenet256")
