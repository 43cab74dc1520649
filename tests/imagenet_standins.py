"""Stand-ins for ImageNet tests: a small synset-folder tree, a tiny random SD-VAE, a pixel feature extractor."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from flowzoo.eval.fid_extractors import FEATURE_EXTRACTORS

SYNSETS = ("n01440764", "n01443537", "n01484850")
SIZES = ((40, 30), (70, 90), (33, 33), (130, 60), (64, 64))  # (width, height): landscape, portrait, square


def make_image_folder(root: Path, per_class: int = 4, corrupt: bool = True) -> Path:
    """root/<synset>/*.JPEG of random colours and sizes, plus one file that is not an image."""
    rng = np.random.default_rng(0)
    for c, synset in enumerate(SYNSETS):
        (root / synset).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = SIZES[(c + i) % len(SIZES)]
            base = rng.integers(0, 256, size=3) * (c + 1) % 256  # a class colour plus noise
            arr = np.clip(base + rng.normal(0, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / synset / f"{synset}_{i}.JPEG", quality=95)
    if corrupt:
        (root / SYNSETS[1] / f"{SYNSETS[1]}_broken.JPEG").write_bytes(b"not a jpeg at all")
    return root


def tiny_vae(directory: Path) -> Path:
    """A randomly initialised AutoencoderKL (4 latent channels, /8 downsampling) saved to a folder."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, norm_num_groups=4, sample_size=32)
    vae.save_pretrained(directory)
    return directory


class PixelFeatures:
    """A cheap stand-in for Inception: 4x4 average-pooled RGB (48-d) plus logits for IS."""

    path = None

    def __init__(self, weights=None, device="cpu"):
        pass

    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        x = F.adaptive_avg_pool2d(images.float() / 255.0, 4).flatten(1).double()
        return {"pool": x.numpy(), "logits": (x[:, :10] * 5).numpy()}


if "test_pixels" not in FEATURE_EXTRACTORS._entries:
    FEATURE_EXTRACTORS.add("test_pixels", PixelFeatures, source="tests")


@functools.lru_cache(maxsize=None)
def standin_cache() -> tuple[str, str]:
    """(latent cache dir, FID reference .npz) built once per test process from the stand-ins above."""
    import pytest

    pytest.importorskip("diffusers")
    from flowzoo.data.imagenet import prepare_latents
    from flowzoo.eval.fid import reference_from_folder

    root = Path(tempfile.mkdtemp(prefix="flowzoo-imagenet-"))
    data = make_image_folder(root / "train")
    prepare_latents(data, str(tiny_vae(root / "vae")), root / "latents", shard_size=5, batch_size=4, image_size=32,
                    progress=False, log=lambda s: None)
    reference_from_folder(data, root / "ref.npz", extract=PixelFeatures(), image_size=32)
    return str(root / "latents"), str(root / "ref.npz")


def dataset_for_tests(name: str):
    """create_dataset(name), with a stand-in cache for datasets that need the user's data (registry-wide tests)."""
    from flowzoo.data import create_dataset

    if name == "imagenet256":
        cache, ref = standin_cache()
        return create_dataset(name, path=cache, fid={"reference": ref, "extractor": "test_pixels", "batch_size": 50})
    if name == "kinetics700":
        from video_standins import kinetics_for_tests

        return kinetics_for_tests()
    return create_dataset(name)
