"""FID (with IS and precision/recall where the extractor and reference allow) of generated ImageNet latents.

Protocol (ADM / DiT / MeanFlow / alpha-Flow): 50K samples (eval.num_samples), class-balanced labels
(50 per class, what flowzoo's generate() draws), decoded by the SD-VAE to 256x256 uint8, Inception
pool features against reference statistics. Reference statistics are an .npz with ``mu`` and ``sigma``
(``features`` too for precision/recall): ADM's VIRTUAL_imagenet256_labeled.npz, or a pass over the
train set (`flowzoo prepare fid-reference`). Their sha256 goes into the result record.

Configured through the dataset (the metric contract passes only the dataset), e.g.
    data: {name: imagenet256, path: DIR, fid: {reference: ref.npz, extractor: nvidia_inception, weights: null}}
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowzoo.eval.base import Metric
from flowzoo.eval.fid_extractors import create_extractor
from flowzoo.eval.frechet import frechet_distance, gaussian_stats
from flowzoo.registry import METRICS

FID_KEYS = ("reference", "extractor", "weights", "batch_size", "device")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_reference(path: str | Path | None) -> dict[str, np.ndarray]:
    """{mu, sigma[, features]} from an .npz (no pickle), or ValueError with one sentence."""
    if not path or not Path(path).is_file():
        raise ValueError(
            f"FID needs reference statistics{f' ({path} does not exist)' if path else ''}: set data.fid.reference to "
            f"ADM's VIRTUAL_imagenet256_labeled.npz or to the file `flowzoo prepare fid-reference` writes."
        )
    with np.load(path, allow_pickle=False) as f:
        if "mu" not in f or "sigma" not in f:
            raise ValueError(f"{path} must hold arrays 'mu' and 'sigma' (found {', '.join(f.files)}).")
        return {k: f[k] for k in f.files if k in ("mu", "sigma", "features")}


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS = exp E KL(p(y|x) || p(y)), mean and std over `splits` chunks (Salimans et al. 2016)."""
    t = torch.from_numpy(logits).double()
    scores = []
    for chunk in t.chunk(splits):
        p, log_p = chunk.softmax(1), chunk.log_softmax(1)
        kl = (p * (log_p - p.mean(0, keepdim=True).log())).sum(1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def image_features(images_batches, extractor) -> dict[str, np.ndarray]:
    """Concatenate extractor outputs over an iterable of uint8 image batches."""
    parts: dict[str, list[np.ndarray]] = {}
    for images in images_batches:
        for key, value in extractor(images).items():
            parts.setdefault(key, []).append(value)
    return {k: np.concatenate(v) for k, v in parts.items()}


@METRICS.register("imagenet_fid")
class ImageNetFID(Metric):
    """FID-50K of decoded latents vs reference statistics; IS and precision/recall when available."""

    name = "imagenet_fid"

    def __init__(self, seed: int = 0, extractor: Any = None):
        super().__init__(seed)
        self._extractor = extractor  # an extractor object (tests); else built from dataset.fid
        self._injected = extractor is not None

    def supports(self, dataset) -> bool:
        return hasattr(dataset, "decode") and isinstance(getattr(dataset, "fid", None), dict)

    def _settings(self, dataset) -> dict[str, Any]:
        fid = dict(dataset.fid)
        unknown = sorted(set(fid) - set(FID_KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) data.fid.{', data.fid.'.join(unknown)}; valid: {', '.join(FID_KEYS)}.")
        return {"extractor": "nvidia_inception", "weights": None, "batch_size": 100, "device": None, **fid}

    def extractor(self, settings: dict[str, Any]):
        if self._extractor is None:
            self._extractor = create_extractor(settings["extractor"], settings["weights"], settings["device"])
        return self._extractor

    def __call__(self, generated: torch.Tensor, labels: torch.Tensor | None, dataset) -> dict[str, float]:
        return self.finish([self.summarise(generated, labels, dataset)], dataset)

    def summarise(self, generated: torch.Tensor, labels: torch.Tensor | None, dataset) -> dict[str, np.ndarray]:
        """Inception features of this rank's decoded samples (what a sharded evaluation gathers)."""
        generated = self._check_shape(generated, dataset)
        settings = self._settings(dataset)
        load_reference(settings.get("reference"))  # fail before the (long) decoding pass
        extractor = self.extractor(settings)
        batches = (dataset.decode(chunk) for chunk in generated.split(int(settings["batch_size"])))
        return image_features(batches, extractor)

    def finish(self, parts: list[dict[str, np.ndarray]], dataset) -> dict[str, float]:
        feats = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        count = len(feats["pool"])
        if count < 50_000:
            warnings.warn(f"imagenet_fid from {count} < 50,000 samples is biased upward; compare only at equal counts.", stacklevel=2)
        reference = load_reference(self._settings(dataset).get("reference"))
        mu, sigma = gaussian_stats(feats["pool"])
        out = {"fid": frechet_distance(mu, sigma, reference["mu"], reference["sigma"])}
        if "logits" in feats:
            out["is"], out["is_std"] = inception_score(feats["logits"])
        if "features" in reference:
            from torch_fidelity.metric_prc import calculate_precision_recall_part

            precision, recall = calculate_precision_recall_part(torch.from_numpy(feats["pool"]).float(),
                                                                torch.from_numpy(reference["features"]).float())
            out["precision"], out["recall"] = float(precision), float(recall)
        return out

    def reference(self, dataset) -> dict[str, float]:
        return {}  # the floor (train vs train) is a 50K-image pass of its own; see docs/imagenet.md

    def info(self, dataset) -> dict[str, Any]:
        """What the numbers are measured against, for the result record."""
        settings = self._settings(dataset)
        ref = settings.get("reference")
        path = getattr(self._extractor, "path", settings["weights"])
        return {
            "reference": str(ref), "reference_sha256": sha256_file(ref) if ref and Path(ref).is_file() else None,
            "extractor": type(self._extractor).__name__ if self._injected else settings["extractor"],
            "extractor_weights_sha256": sha256_file(path) if path and Path(str(path)).is_file() else None,
            "labels": "class-balanced (i mod num_classes)", "vae": str(getattr(dataset, "vae_source", None)),
        }


def reference_from_folder(data: str | Path, out: str | Path, *, extractor: str = "nvidia_inception", weights: str | None = None,
                          max_images: int | None = None, keep_features: int = 10_000, batch_size: int = 100,
                          seed: int = 0, image_size: int = 256, device: str | None = None, extract=None) -> dict[str, Any]:
    """Reference statistics from a pass over an image folder (ADM centre crop); writes OUT.npz atomically."""
    from flowzoo.atomic import atomic_write
    from flowzoo.data.imagenet.folder import load_cropped, scan_image_folder

    index = scan_image_folder(data)
    order = np.random.default_rng(seed).permutation(len(index))[:max_images]
    extract = extract or create_extractor(extractor, weights, device)

    def batches():
        for start in range(0, len(order), batch_size):
            imgs = [load_cropped(index.files[i], image_size) for i in order[start:start + batch_size]]
            imgs = [im for im in imgs if im is not None]
            if imgs:
                yield torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()

    feats = image_features(batches(), extract)["pool"]
    mu, sigma = gaussian_stats(feats)
    arrays = {"mu": mu, "sigma": sigma, "features": feats[:keep_features].astype(np.float32), "count": np.array(len(feats))}
    atomic_write(out, lambda f: np.savez(f, **arrays))
    return {"path": str(out), "count": len(feats), "sha256": sha256_file(out)}
