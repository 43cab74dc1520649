"""FD-DINOv2: the Frechet distance in DINOv2 ViT-L/14 feature space (Stein et al., "Exposing flaws of
generative model evaluation metrics and their unfair treatment of diffusion models", NeurIPS 2023), the
number alpha-Flow and TVM report beside FID.

Protocol (the paper's code, layer6ai-labs/dgm-eval, dgm_eval/models/dinov2.py): each uint8 RGB image is
resized to 224x224 with PIL's bicubic filter (torchvision's Resize on a PIL image), scaled to [0, 1],
normalised with ImageNet's mean and std, and fed to DINOv2 ViT-L/14 (torch.hub ``dinov2_vitl14``); the
feature is the CLS token after the final norm (1024-d). The hub model interpolates its 37x37 position
embedding to the 16x16 patch grid of a 224 input on every call (bicubic, no antialias, with DINO's +0.1
offset); here that same call runs once on the loaded tensor, so timm's ``vit_large_patch14_dinov2`` built
at img_size=224 computes the hub model's features (tests/test_fd_dinov2.py checks both steps against
their originals). The distance is flowzoo's (frechet.py, covariance 1/(N-1)). EDM2's FD-DINOv2 resizes
in float (torch bicubic with antialias, no uint8 rounding): a different protocol, not this one.

The weights are the user's, never downloaded here: timm's ``vit_large_patch14_dinov2.lvd142m``
``model.safetensors`` or Meta's ``dinov2_vitl14_pretrain.pth`` (read weights-only), given as
``data.fd_dinov2.weights`` or the ``FLOWZOO_DINOV2`` environment variable. Reference statistics (.npz
with mu, sigma) come from `flowzoo prepare fd-dinov2-reference` (this code over an image folder, ADM's
centre crop). The record holds both files' sha256.

Configured through the dataset, on by giving it, e.g.
    data: {name: imagenet256, fd_dinov2: {reference: dino-ref.npz, weights: /models/dinov2_vitl14.safetensors}}
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from flowzoo.eval.base import Metric
from flowzoo.eval.fid import sha256_file
from flowzoo.eval.frechet import frechet_distance, gaussian_stats
from flowzoo.registry import METRICS

WEIGHTS_ENV = "FLOWZOO_DINOV2"
INPUT_SIZE = 224  # dgm-eval: Resize((224, 224), BICUBIC)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FD_DINOV2_DEFAULTS: dict[str, Any] = {
    "reference": None,  # .npz with mu and sigma (flowzoo prepare fd-dinov2-reference)
    "weights": None,  # DINOv2 weights (.safetensors, or a weights-only .pth); None: $FLOWZOO_DINOV2
    "model": "vit_large_patch14_dinov2",  # timm architecture the weights are loaded into
    "batch_size": 100,  # images per decode and feature pass
    "device": None,  # None: cuda if available
}


def dgm_eval_preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float (N, 3, 224, 224): PIL bicubic resize, /255, ImageNet mean/std (dgm-eval)."""
    from PIL import Image

    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"FD-DINOv2 takes uint8 (N, 3, H, W) images, got {images.dtype} {tuple(images.shape)}.")
    resized = [np.asarray(Image.fromarray(img).resize((INPUT_SIZE, INPUT_SIZE), Image.BICUBIC))
               for img in images.permute(0, 2, 3, 1).cpu().numpy()]
    x = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def hub_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """The position embedding DINOv2's hub model adds for a grid x grid patch input (its
    interpolate_pos_encoding: bicubic, scale factor (grid + 0.1) / M, no antialias), class position first."""
    tokens = pos_embed.shape[1]
    prefix = 0 if math.isqrt(tokens) ** 2 == tokens else 1
    m = math.isqrt(tokens - prefix)
    if m == grid:
        return pos_embed
    dim = pos_embed.shape[-1]
    patch = pos_embed[:, prefix:].float().reshape(1, m, m, dim).permute(0, 3, 1, 2)
    scale = float((grid + 0.1) / m)
    patch = F.interpolate(patch, scale_factor=(scale, scale), mode="bicubic")
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat([pos_embed[:, :prefix].float(), patch], dim=1).to(pos_embed.dtype)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a .pth/.pt read weights-only (no arbitrary unpickling)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (a corrupt or foreign file: one sentence, not a library traceback)
        raise ValueError(f"{path} is not a readable weights file ({type(exc).__name__}); give DINOv2 ViT-L/14 weights as "
                         f".safetensors or a weights-only .pth.") from None
    for key in ("model", "state_dict"):  # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors; give DINOv2 ViT-L/14 weights.")
    return state


class DINOv2Features:
    """uint8 (N, 3, H, W) images -> {"pool": (N, D) float64 CLS features}, with dgm-eval's preprocessing.

    `weights`: a file (None: $FLOWZOO_DINOV2); `model`: the timm architecture they belong to."""

    def __init__(self, weights: str | None = None, model: str = "vit_large_patch14_dinov2", device: str = "cpu"):
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn

        path = weights or os.environ.get(WEIGHTS_ENV)
        if not path or not Path(path).is_file():
            where = f" ({path} does not exist)" if path else ""
            raise FileNotFoundError(
                f"FD-DINOv2 needs the DINOv2 ViT-L/14 weights file{where}: set data.fd_dinov2.weights (or the "
                f"{WEIGHTS_ENV} environment variable) to timm's vit_large_patch14_dinov2.lvd142m model.safetensors "
                f"or Meta's dinov2_vitl14_pretrain.pth."
            )
        if not timm.is_model(model):
            raise ValueError(f"data.fd_dinov2.model {model!r} is not a timm model; use vit_large_patch14_dinov2.")
        self.path, self.model, self.device = Path(path), model, torch.device(device)
        net = timm.create_model(model, pretrained=False, num_classes=0, img_size=INPUT_SIZE)
        state = read_weights(path)
        if "pos_embed" in state:
            state["pos_embed"] = hub_pos_embed(state["pos_embed"], INPUT_SIZE // net.patch_embed.patch_size[0])
        try:
            net.load_state_dict(checkpoint_filter_fn(state, net), strict=True)
        except (RuntimeError, KeyError, ValueError) as exc:
            first = str(exc).replace("\n", " ")[:160]
            raise ValueError(f"{path} does not fit timm's {model} ({first}...): give DINOv2 ViT-L/14 weights, or set "
                             f"data.fd_dinov2.model to the architecture they belong to.") from None
        self.net = net.eval().to(self.device)
        self._sha256: str | None = None

    @property
    def sha256(self) -> str:
        if self._sha256 is None:  # hashed once: the ViT-L file is 1.2 GB
            self._sha256 = sha256_file(self.path)
        return self._sha256

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        x = dgm_eval_preprocess(images).to(self.device)
        return {"pool": self.net(x).double().cpu().numpy()}  # num_classes=0: the final-norm CLS token


def load_dinov2_reference(path: str | Path | None) -> dict[str, np.ndarray]:
    """{mu, sigma} from an .npz (no pickle), or a one-sentence error."""
    if not path or not Path(path).is_file():
        raise FileNotFoundError(
            f"FD-DINOv2 needs reference statistics{f' ({path} does not exist)' if path else ''}: set "
            f"data.fd_dinov2.reference to the .npz that `flowzoo prepare fd-dinov2-reference` writes."
        )
    with np.load(path, allow_pickle=False) as f:
        if "mu" not in f or "sigma" not in f:
            raise ValueError(f"{path} must hold arrays 'mu' and 'sigma' (found {', '.join(f.files)}).")
        return {k: f[k] for k in f.files if k in ("mu", "sigma", "count")}


@METRICS.register("fd_dinov2")
class FDDINOv2(Metric):
    """FD-DINOv2 of decoded samples against reference statistics (dgm-eval's protocol, see the module).

    ``extractor``: None (built from data.fd_dinov2) or a callable uint8 images -> {"pool": features} (tests)."""

    name = "fd_dinov2"

    def __init__(self, seed: int = 0, extractor: Callable | None = None):
        super().__init__(seed)
        self._extractor = extractor
        self._injected = extractor is not None
        self._count: int | None = None

    def supports(self, dataset) -> bool:
        return hasattr(dataset, "decode") and bool(getattr(dataset, "fd_dinov2", None))

    def settings(self, dataset) -> dict[str, Any]:
        given = dict(getattr(dataset, "fd_dinov2", None) or {})
        unknown = sorted(set(given) - set(FD_DINOV2_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown key(s) data.fd_dinov2.{', data.fd_dinov2.'.join(unknown)}; "
                             f"valid: {', '.join(FD_DINOV2_DEFAULTS)}.")
        out = {**FD_DINOV2_DEFAULTS, **given}
        out["weights"] = out["weights"] or os.environ.get(WEIGHTS_ENV)
        return out

    def extractor(self, settings: dict[str, Any]) -> Callable:
        if self._extractor is None:
            device = settings["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
            self._extractor = DINOv2Features(settings["weights"], settings["model"], device)
        return self._extractor

    def check(self, dataset) -> None:
        """Fail now (settings, reference, weights) rather than after training; a run calls this first."""
        settings = self.settings(dataset)
        load_dinov2_reference(settings["reference"])
        self.extractor(settings)

    def __call__(self, generated: torch.Tensor, labels: torch.Tensor | None, dataset) -> dict[str, float]:
        return self.finish([self.summarise(generated, labels, dataset)], dataset)

    def summarise(self, generated: torch.Tensor, labels: torch.Tensor | None, dataset) -> dict[str, np.ndarray]:
        """DINOv2 features of this rank's decoded samples (what a sharded evaluation gathers)."""
        generated = self._check_shape(generated, dataset)
        settings = self.settings(dataset)
        load_dinov2_reference(settings["reference"])  # fail before the (long) decoding pass
        extract = self.extractor(settings)
        parts = [extract(dataset.decode(chunk))["pool"] for chunk in generated.split(int(settings["batch_size"]))]
        return {"features": np.concatenate(parts)}

    def finish(self, parts: list[dict[str, np.ndarray]], dataset) -> dict[str, float]:
        features = np.concatenate([p["features"] for p in parts])
        self._count = len(features)
        if self._count < 50_000:
            warnings.warn(f"fd_dinov2 from {self._count} < 50,000 samples is biased upward; compare only at equal counts.",
                          stacklevel=2)
        reference = load_dinov2_reference(self.settings(dataset)["reference"])
        mu, sigma = gaussian_stats(features)
        if mu.shape != reference["mu"].shape:
            raise ValueError(f"fd_dinov2: the reference statistics are {reference['mu'].shape[0]}-d but the features are "
                             f"{mu.shape[0]}-d; compute the reference with the same weights (flowzoo prepare fd-dinov2-reference).")
        return {"fd_dinov2": frechet_distance(mu, sigma, reference["mu"], reference["sigma"])}

    def reference(self, dataset) -> dict[str, float]:
        return {}  # the floor (train vs train) is a 50K-image pass of its own

    def info(self, dataset) -> dict[str, Any]:
        """What the number is measured against and how, for the result record (file names and sha256s)."""
        settings = self.settings(dataset)
        ref = settings["reference"]
        weights = getattr(self._extractor, "path", None) or settings["weights"]
        sha = getattr(self._extractor, "sha256", None) if not self._injected else None
        if sha is None and weights and Path(str(weights)).is_file():
            sha = sha256_file(weights)
        count = None
        if ref and Path(ref).is_file():
            count = load_dinov2_reference(ref).get("count")
        return {
            "implementation": "flowzoo.eval.fd_dinov2 (dgm-eval's DINOv2 CLS features and flowzoo's Frechet distance, 1)",
            "preprocess": f"uint8 RGB, PIL bicubic resize to {INPUT_SIZE}x{INPUT_SIZE}, /255, ImageNet mean/std",
            "extractor": type(self._extractor).__name__ if self._injected else settings["model"],
            "extractor_weights": Path(str(weights)).name if weights else None,
            "extractor_weights_sha256": sha,
            "reference": Path(ref).name if ref else None,
            "reference_sha256": sha256_file(ref) if ref and Path(ref).is_file() else None,
            "reference_count": None if count is None else int(count),
            "num_generated": self._count, "covariance": "1/(N-1)", "labels": "class-balanced (i mod num_classes)",
            "vae": str(getattr(dataset, "vae_source", None)),
        }


def reference_from_folder(data: str | Path, out: str | Path, *, weights: str | None = None,
                          model: str = "vit_large_patch14_dinov2", max_images: int | None = None,
                          keep_features: int = 10_000, batch_size: int = 100, seed: int = 0, image_size: int = 256,
                          device: str | None = None, extract: Callable | None = None) -> dict[str, Any]:
    """FD-DINOv2 reference statistics from an image folder (ADM's centre crop to image_size, then the metric's
    own preprocessing and network); writes OUT.npz (mu, sigma, features, count) atomically."""
    from flowzoo.eval.fid import reference_from_folder as fid_reference

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    extract = extract or DINOv2Features(weights, model, device)
    return fid_reference(data, out, max_images=max_images, keep_features=keep_features, batch_size=batch_size,
                         seed=seed, image_size=image_size, extract=extract)
