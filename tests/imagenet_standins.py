"""Stand-ins for ImageNet tests: a small synset-folder tree, a tiny random SD-VAE, a pixel feature extractor, a tiny
random DINOv2-shaped ViT."""

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


TINY_DINOV2 = "vit_test_patch14_dinov2"  # timm name of a 2-block, 32-wide DINOv2-shaped ViT (tests only)


def register_tiny_dinov2() -> str:
    """Register TINY_DINOV2 with timm: DINOv2's layout (patch 14, class token, layer scale, a 37x37 position grid
    as the 518-px checkpoints have) at a size that runs in milliseconds. Layer scale starts at 1, so the random
    blocks shape the features (at DINOv2's 1e-5 they would be the identity)."""
    import timm
    from timm.models import register_model
    from timm.models.vision_transformer import _create_vision_transformer

    if not timm.is_model(TINY_DINOV2):
        def vit_test_patch14_dinov2(pretrained=False, **kwargs):
            args = dict(patch_size=14, embed_dim=32, depth=2, num_heads=2, init_values=1.0, img_size=518)
            return _create_vision_transformer("vit_large_patch14_dinov2", pretrained=pretrained, **{**args, **kwargs})

        register_model(vit_test_patch14_dinov2)
    return TINY_DINOV2


def tiny_dinov2_weights(path: Path) -> Path:
    """Random TINY_DINOV2 weights at its 518-px shape (position grid 37x37), saved as safetensors."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model(register_tiny_dinov2(), pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@functools.lru_cache(maxsize=None)
def standin_dinov2() -> dict:
    """data.fd_dinov2 for the stand-in cache: tiny ViT weights and reference statistics over its image folder."""
    from flowzoo.eval.fd_dinov2 import reference_from_folder

    root = Path(standin_cache()[1]).parent
    weights = tiny_dinov2_weights(root / "dinov2-tiny.safetensors")
    reference_from_folder(root / "train", root / "dinov2-ref.npz", weights=str(weights), model=register_tiny_dinov2(),
                          image_size=32, device="cpu")
    return {"reference": str(root / "dinov2-ref.npz"), "weights": str(weights), "model": TINY_DINOV2,
            "batch_size": 50, "device": "cpu"}


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
        return create_dataset(name, path=cache, fid={"reference": ref, "extractor": "test_pixels", "batch_size": 50},
                              fd_dinov2=standin_dinov2())
    if name == "kinetics700":
        from video_standins import kinetics_for_tests

        return kinetics_for_tests()
    if name == "fashion_mnist":  # tiny IDX files: the tests never need Debian's dataset-fashion-mnist
        from fashion_standins import standin_fashion_root

        return create_dataset(name, path=standin_fashion_root())
    return create_dataset(name)
