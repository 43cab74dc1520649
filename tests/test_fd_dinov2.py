"""FD-DINOv2: dgm-eval's preprocessing, the hub model's features from timm's ViT, the reference from the same
code, sharded evaluation, the protocol record, and one sentence for every missing file (a tiny random ViT)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowzoo.eval.fd_dinov2 import (
    FDDINOv2, WEIGHTS_ENV, DINOv2Features, dgm_eval_preprocess, hub_pos_embed, reference_from_folder,
)
from flowzoo.eval.fid import sha256_file
from flowzoo.eval.frechet import frechet_distance, gaussian_stats
from imagenet_standins import make_image_folder, register_tiny_dinov2, tiny_dinov2_weights
from test_cli import flowzoo


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """Tiny DINOv2-shaped weights, an image folder and its FD-DINOv2 reference statistics."""
    root = tmp_path_factory.mktemp("dinov2")
    weights = tiny_dinov2_weights(root / "tiny.safetensors")
    folder = make_image_folder(root / "train", per_class=4)
    info = reference_from_folder(folder, root / "ref.npz", weights=str(weights), model=register_tiny_dinov2(),
                                 image_size=32, device="cpu")
    return {"root": root, "weights": weights, "folder": folder, "ref": root / "ref.npz", "info": info}


class Images:
    """A dataset of uint8 RGB images (stored as floats); decode() gives them back as uint8."""

    name, num_classes, sample_shape = "images", 0, (3, 32, 32)

    def __init__(self, fd_dinov2: dict):
        self.fd_dinov2 = fd_dinov2

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x.round().clamp(0, 255).to(torch.uint8)


def folder_images(folder) -> torch.Tensor:
    from flowzoo.data.imagenet.folder import load_cropped, scan_image_folder

    crops = [c for c in (load_cropped(f, 32) for f in scan_image_folder(folder).files) if c is not None]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()


def test_preprocessing_is_dgm_evals_torchvision_pipeline():
    import torchvision.transforms as TF
    from PIL import Image

    # dgm_eval/models/dinov2.py: Resize((224, 224), BICUBIC) on the PIL image, ToTensor, Normalize(ImageNet)
    dgm_eval = TF.Compose([TF.Resize((224, 224), TF.InterpolationMode.BICUBIC), TF.ToTensor(),
                           TF.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    images = torch.randint(0, 256, (3, 3, 256, 256), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    expected = torch.stack([dgm_eval(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in images])
    assert torch.equal(dgm_eval_preprocess(images), expected.float())
    with pytest.raises(ValueError, match="uint8"):
        dgm_eval_preprocess(images.float())


def hub_features(net_518, x: torch.Tensor) -> torch.Tensor:
    """DINOv2's hub forward (dinov2/models/vision_transformer.py) on the 518-px net's parameters: the position
    embedding interpolated on every call (interpolate_pos_encoding), blocks, norm, the CLS token."""
    patches = net_518.patch_embed.proj(x).flatten(2).transpose(1, 2)
    tokens = torch.cat([net_518.cls_token.expand(len(x), -1, -1), patches], dim=1)
    pos = net_518.pos_embed.float()
    n, dim = pos.shape[1] - 1, pos.shape[-1]
    w0 = h0 = x.shape[-1] // 14 + 0.1
    patch_pos = F.interpolate(pos[:, 1:].reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2),
                              scale_factor=(float(w0 / math.sqrt(n)), float(h0 / math.sqrt(n))), mode="bicubic")
    tokens = tokens + torch.cat([pos[:, :1], patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)
    for block in net_518.blocks:
        tokens = block(tokens)
    return net_518.norm(tokens)[:, 0]


def test_timm_vit_from_a_file_computes_the_hub_models_features_in_either_checkpoint_format(tiny, tmp_path):
    import timm
    from safetensors.torch import load_file

    state = load_file(str(tiny["weights"]))
    net_518 = timm.create_model(register_tiny_dinov2(), pretrained=False, num_classes=0).eval()
    net_518.load_state_dict(state)
    images = torch.randint(0, 256, (4, 3, 64, 48), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    with torch.no_grad():
        expected = hub_features(net_518, dgm_eval_preprocess(images)).double().numpy()
    ours = DINOv2Features(str(tiny["weights"]), register_tiny_dinov2())(images)["pool"]
    assert ours.shape == (4, 32) and np.allclose(ours, expected, atol=1e-5), np.abs(ours - expected).max()
    assert np.abs(ours[0] - ours[1]).max() > 1e-3  # the features depend on the image
    # Meta's layout (dinov2_vitl14_pretrain.pth: the same keys plus mask_token), read weights-only
    torch.save({**state, "mask_token": torch.zeros(1, 32)}, tmp_path / "meta.pth")
    assert np.array_equal(DINOv2Features(str(tmp_path / "meta.pth"), register_tiny_dinov2())(images)["pool"], ours)
    assert hub_pos_embed(state["pos_embed"], 16).shape == (1, 257, 32)


def test_reference_from_folder_is_the_metric_on_the_same_images(tiny):
    settings = {"reference": str(tiny["ref"]), "weights": str(tiny["weights"]), "model": register_tiny_dinov2()}
    data, metric = Images(settings), FDDINOv2(seed=0)
    real = folder_images(tiny["folder"])
    assert tiny["info"]["count"] == len(real) == 12  # the broken file is skipped
    with pytest.warns(UserWarning, match="biased upward"):
        same = metric(real, None, data)["fd_dinov2"]
    noise = torch.randint(0, 256, real.shape, generator=torch.Generator().manual_seed(2)).float()
    with pytest.warns(UserWarning):
        far = metric(noise, None, data)["fd_dinov2"]
    assert same < 1e-6 and far > 1e-3, (same, far)
    with pytest.warns(UserWarning):  # sharded: two ranks' features gathered == one process
        parts = [metric.summarise(real[:5], None, data), metric.summarise(real[5:], None, data)]
        assert metric.finish(parts, data)["fd_dinov2"] == pytest.approx(same, abs=1e-9)
    info = metric.info(data)
    assert info["extractor_weights_sha256"] == sha256_file(tiny["weights"]) and info["reference_sha256"] == tiny["info"]["sha256"]
    assert info["extractor"] == register_tiny_dinov2() and info["reference_count"] == 12 and "PIL bicubic" in info["preprocess"]
    mu, sigma = gaussian_stats(DINOv2Features(str(tiny["weights"]), register_tiny_dinov2())(real.to(torch.uint8))["pool"])
    ref = np.load(tiny["ref"])
    assert frechet_distance(mu, sigma, ref["mu"], ref["sigma"]) < 1e-6


def test_missing_or_wrong_files_are_one_sentence(tiny, tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    ref = str(tiny["ref"])
    with pytest.raises(FileNotFoundError, match=r"data\.fd_dinov2\.weights.*FLOWZOO_DINOV2") as info:
        FDDINOv2().check(Images({"reference": ref}))  # what a run calls before training
    message = str(info.value)
    assert "\n" not in message and message.endswith(".") and ". " not in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FDDINOv2().check(Images({"reference": ref, "weights": str(tmp_path / "none.safetensors")}))
    with pytest.raises(FileNotFoundError, match="fd-dinov2-reference"):
        FDDINOv2().check(Images({"weights": str(tiny["weights"])}))
    with pytest.raises(ValueError, match=r"unknown key.*data\.fd_dinov2\.weigths"):
        FDDINOv2().check(Images({"reference": ref, "weigths": "x"}))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable weights file"):
        DINOv2Features(str(tmp_path / "junk.pth"), register_tiny_dinov2())
    with pytest.raises(ValueError, match="does not fit timm's vit_large_patch14_dinov2"):  # tiny weights, ViT-L asked
        DINOv2Features(str(tiny["weights"]))
    monkeypatch.setenv(WEIGHTS_ENV, str(tiny["weights"]))  # the environment variable stands in for the key
    FDDINOv2().check(Images({"reference": ref, "model": register_tiny_dinov2()}))


def test_a_run_without_the_weights_stops_before_training_with_one_line(tmp_path, capsys, monkeypatch):
    from imagenet_standins import standin_cache

    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    cache, ref = standin_cache()
    capsys.readouterr()  # building the stand-in cache may print a diffusers notice
    code, _, err = flowzoo("run", "--objective", "flow_matching", "--data", cache, "--set", f"data.fd_dinov2={{reference: {ref}}}",
                           "--backbone", "DiT-tiny/2", "--steps", "2", "--out", str(tmp_path / "run"), "--quiet", capsys=capsys)
    assert code == 2 and "data.fd_dinov2.weights" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_prepare_command_writes_the_reference(tiny, tmp_path, capsys):
    code, out, _ = flowzoo("prepare", "fd-dinov2-reference", "--data", str(tiny["folder"]), "--out", str(tmp_path / "r.npz"),
                           "--weights", str(tiny["weights"]), "--model", register_tiny_dinov2(), "--image-size", "32",
                           capsys=capsys)
    assert code == 0 and "12 images" in out
    assert np.array_equal(np.load(tmp_path / "r.npz")["mu"], np.load(tiny["ref"])["mu"])
