"""FVD: Frechet distance between I3D features of generated and real video clips (Unterthiner et al. 2018).

Detector and distance: StyleGAN-V's (Skorokhodov et al., CVPR 2022; universome/stylegan-v,
src/metrics/metric_main.py, frechet_video_distance.py, metric_utils.py): each clip as uint8
(N, 3, T, H, W) (generated ones mapped x -> x * 127.5 + 128, clamped, as StyleGAN-V does) goes into its
TorchScript port of the tf-hub FVD I3D (Kinetics-400) as
``detector(clips, rescale=True, resize=True, return_features=True)``: the detector itself maps [0, 255]
to [-1, 1] and resizes every frame to 224x224, and returns the 400 pre-softmax logits as features. The
Frechet distance is flowzoo's (frechet.py); its covariance uses 1/(N - 1) where StyleGAN-V's uses 1/N, a
relative difference of 1/2048 in the trace terms.

Clips: StyleGAN-V's ``fvd2048_16f``, the protocol most video-generation papers report, takes 2,048 real and
2,048 generated clips of 16 *consecutive* frames of the real videos. Ours are what the dataset draws
(Kinetics-700 by default: 16 frames at stride 2, 64x64 px; see flowzoo/data/kinetics/clips.py) against its
reference, which is clips of the real videos or, for a latent cache whose videos are gone, VAE
reconstructions of the cached latents. The protocol record names all of it (``reference_kind``, ``clip``:
frames, stride, size; ``clip_protocol``: whether it is fvd2048_16f and, where not, that it is not), so FVDs
against another kind of reference or other clips get another protocol id and are never ranked together,
nor read as published fvd2048_16f numbers.

The I3D file is the user's: i3d_torchscript.pt from StyleGAN-V's release, given as ``data.fvd.weights``
or the ``FLOWZOO_I3D`` environment variable; its sha256 goes into the result record. torch.jit.load
restores TorchScript code and tensors without unpickling arbitrary Python objects, but the graph in the
file still runs as written: use a file from a source you trust.

Configured through the dataset (the metric contract passes only the dataset), e.g.
    data: {name: kinetics700, fvd: {weights: /models/i3d_torchscript.pt, num_frames: 16, num_real: 2048}}
and eval.num_samples: 2048 for the generated side. What the metric uses of a dataset: ``sample_shape``
(C, F, H, W); ``decode_video(x)`` -> uint8 (N, 3, F, H, W) where it has one (latent clips need it;
pixel clips in [-1, 1] are converted here otherwise); real clips from ``reference_video(n, seed)`` ->
(uint8 clips, labels) where it has one (e.g. the original videos of a latent cache), else from
``reference(n, seed)``; settings from its ``fvd`` dict (data.fvd).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from flowzoo.eval.base import Metric
from flowzoo.eval.fid import sha256_file
from flowzoo.eval.frechet import frechet_distance, gaussian_stats
from flowzoo.registry import METRICS, Registry

VIDEO_EXTRACTORS = Registry("video_feature_extractor", "flowzoo.video_feature_extractors")

WEIGHTS_ENV = "FLOWZOO_I3D"
FVD_DEFAULTS: dict[str, Any] = {
    "weights": None,  # path of i3d_torchscript.pt; None: $FLOWZOO_I3D
    "extractor": "stylegan_v_i3d",  # a registered video feature extractor
    "num_frames": 16,  # the first num_frames frames of every clip (StyleGAN-V: 16 consecutive frames)
    "num_real": 2048,  # real clips, from dataset.reference(num_real, seed)
    "num_generated": 2048,  # generated clips used (the first ones); fewer are measured with a warning
    "batch_size": 32,  # clips per extractor call
    "device": None,  # None: cuda if available
    "floor": False,  # reference(): FVD of num_real real clips against num_real others ("real/fvd")
}


def to_uint8(clips: torch.Tensor) -> torch.Tensor:
    """Clips in [-1, 1] -> uint8 [0, 255], rounded (StyleGAN-V's x * 127.5 + 128 then truncation, i.e. rounding)."""
    return ((clips.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


@VIDEO_EXTRACTORS.register("stylegan_v_i3d")
class StyleGANVI3D:
    """StyleGAN-V's TorchScript I3D: uint8 (N, 3, T, H, W) clips -> (N, 400) float64 features."""

    def __init__(self, weights: str | None = None, device: str = "cpu"):
        path = weights or os.environ.get(WEIGHTS_ENV)
        if not path or not Path(path).is_file():
            where = f" ({path} does not exist)" if path else ""
            raise FileNotFoundError(
                f"FVD needs StyleGAN-V's I3D TorchScript file i3d_torchscript.pt{where}: set data.fvd.weights "
                f"(or the {WEIGHTS_ENV} environment variable) to its path."
            )
        self.path, self.device = Path(path), torch.device(device)
        with warnings.catch_warnings():  # torch >= 2.10 flags jit.load as deprecated; the file format is TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            self.net = torch.jit.load(str(path), map_location=self.device).eval()

    @torch.no_grad()
    def __call__(self, clips: torch.Tensor) -> np.ndarray:
        if clips.dtype != torch.uint8 or clips.dim() != 5 or clips.shape[1] != 3:
            raise ValueError(f"the I3D takes uint8 (N, 3, T, H, W) clips, got {clips.dtype} {tuple(clips.shape)}.")
        # StyleGAN-V's call (frechet_video_distance.py): the detector rescales to [-1, 1] and resizes to 224.
        feats = self.net(clips.to(self.device), rescale=True, resize=True, return_features=True)
        return feats.double().cpu().numpy()


@METRICS.register("fvd")
class FVD(Metric):
    """FVD of generated clips against the dataset's reference clips, with StyleGAN-V's I3D and call (its
    fvd2048_16f protocol only where the clips are: 2,048 + 2,048, 16 consecutive frames of real videos).

    ``extractor``: None (the one data.fvd.extractor names, loaded from data.fvd.weights), a registered
    name, or a callable uint8 (N, 3, T, H, W) -> (N, D) features (tests, other detectors).
    """

    name = "fvd"

    def __init__(self, seed: int = 0, extractor: str | Callable | None = None):
        super().__init__(seed)
        self._injected = extractor is not None and not isinstance(extractor, str)
        self._extractor = extractor if self._injected else None
        self._extractor_name = extractor if isinstance(extractor, str) else None
        self._real: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # (dataset, settings) -> real statistics
        self._reference: dict[str, Any] = {}  # what the real side was: its kind and pixel size, when measured
        self._pixel_size: list[int] | None = None
        self._last: dict[str, Any] = {}

    def supports(self, dataset) -> bool:
        shape = tuple(dataset.sample_shape)
        return len(shape) == 4 and (shape[0] == 3 or hasattr(dataset, "decode_video"))

    def settings(self, dataset) -> dict[str, Any]:
        given = dict(getattr(dataset, "fvd", None) or {})
        unknown = sorted(set(given) - set(FVD_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown key(s) data.fvd.{', data.fvd.'.join(unknown)}; valid: {', '.join(FVD_DEFAULTS)}.")
        out = {**FVD_DEFAULTS, **given}
        out["weights"] = out["weights"] or os.environ.get(WEIGHTS_ENV)
        if self._extractor_name:
            out["extractor"] = self._extractor_name
        return out

    def extractor(self, settings: dict[str, Any]) -> Callable:
        if self._extractor is None:
            device = settings["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
            self._extractor = VIDEO_EXTRACTORS.get(settings["extractor"])(weights=settings["weights"], device=device)
        return self._extractor

    def check(self, dataset) -> None:
        """Fail now (settings, I3D file) rather than after training; a run can call this first."""
        self.extractor(self.settings(dataset))

    # -- features -----------------------------------------------------------------------------------
    @staticmethod
    def _require_pixels(dataset) -> None:
        shape = tuple(dataset.sample_shape)
        if shape[0] != 3 and not hasattr(dataset, "decode_video"):
            raise ValueError(f"fvd needs RGB clips (3, F, H, W); {dataset.name} samples are {shape} "
                             f"and it has no decode_video() to turn them into pixels.")

    def _pixels(self, clips: torch.Tensor, dataset, frames: int) -> torch.Tensor:
        """uint8 (N, 3, frames, H, W) from uint8 clips or samples shaped like dataset's (pixels in [-1, 1], or latents)."""
        if clips.dtype != torch.uint8:
            self._require_pixels(dataset)
            clips = dataset.decode_video(clips) if hasattr(dataset, "decode_video") else to_uint8(clips)
        if clips.shape[2] < frames:
            raise ValueError(f"{dataset.name} clips have {clips.shape[2]} frames but FVD uses {frames}: "
                             f"set data.fvd.num_frames to at most {clips.shape[2]} (not comparable to 16-frame FVD).")
        return clips[:, :, :frames]

    def features(self, clips: torch.Tensor, dataset, settings: dict[str, Any]) -> np.ndarray:
        """(N, D) float64 features of clips shaped like the dataset's samples, batch_size clips at a time."""
        extract = self.extractor(settings)
        parts = []
        for chunk in clips.split(int(settings["batch_size"])):
            pixels = self._pixels(chunk, dataset, int(settings["num_frames"]))
            self._pixel_size = [int(x) for x in pixels.shape[-2:]]  # what the I3D saw, before its resize to 224
            feats = extract(pixels)
            parts.append(np.asarray(torch.as_tensor(feats).detach().double().cpu()))
        return np.concatenate(parts)

    def _real_stats(self, dataset, settings: dict[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
        key = (id(dataset), seed, settings["num_real"], settings["num_frames"], settings["extractor"], settings["weights"])
        if key not in self._real:
            kind = reference_kind(dataset)  # before reading: a latent cache falls back when its videos are gone
            real_clips = getattr(dataset, "reference_video", None) or dataset.reference
            real, _ = real_clips(int(settings["num_real"]), seed)
            self._real[key] = gaussian_stats(self.features(torch.as_tensor(real), dataset, settings))
            self._reference = {"kind": kind, "size": self._pixel_size}
        return self._real[key]

    # -- the contract -------------------------------------------------------------------------------
    def __call__(self, generated: torch.Tensor, labels: torch.Tensor | None, dataset) -> dict[str, float]:
        return self.finish([self.summarise(generated, labels, dataset)], dataset)

    def summarise(self, generated: torch.Tensor, labels: torch.Tensor | None, dataset) -> dict[str, Any]:
        """I3D features of this rank's clips (what a sharded evaluation gathers) and their shape."""
        generated = self._check_shape(generated, dataset)
        self._require_pixels(dataset)
        settings = self.settings(dataset)
        self.extractor(settings)  # fail on a missing I3D before the (long) feature pass
        return {"features": self.features(generated, dataset, settings), "clip_shape": list(generated.shape[1:])}

    def finish(self, parts: list[dict[str, Any]], dataset) -> dict[str, float]:
        settings = self.settings(dataset)
        features = np.concatenate([p["features"] for p in parts])
        wanted = int(settings["num_generated"])
        if len(features) < wanted:
            warnings.warn(f"fvd from {len(features)} < {wanted} generated clips is biased upward; compare only at equal "
                          f"counts (eval.num_samples: {wanted} is the protocol).", stacklevel=2)
        features = features[:wanted]  # the first num_generated clips by index, however they were sharded
        mu_real, sigma_real = self._real_stats(dataset, settings, self.seed)
        mu, sigma = gaussian_stats(features)
        self._last = {"num_generated": len(features), "clip_shape": parts[0]["clip_shape"]}
        return {"fvd": frechet_distance(mu, sigma, mu_real, sigma_real)}

    def reference(self, dataset) -> dict[str, float]:
        """{"real/fvd": real clips against other real clips} when data.fvd.floor is set, else {} (it costs a second pass)."""
        settings = self.settings(dataset)
        if not settings["floor"]:
            return {}
        a = self._real_stats(dataset, settings, self.seed)
        b = self._real_stats(dataset, settings, self.seed + 1)
        return {"real/fvd": frechet_distance(*a, *b)}

    def info(self, dataset) -> dict[str, Any]:
        """What the number is measured against and how, for the result record."""
        settings = self.settings(dataset)
        path = getattr(self._extractor, "path", None) or settings["weights"]
        injected = getattr(self._extractor, "__name__", type(self._extractor).__name__)
        clip = clip_protocol(dataset, settings, self._reference)
        return {
            "implementation": "flowzoo.eval.fvd (StyleGAN-V's I3D and Frechet distance, 2)",
            "reference_kind": self._reference.get("kind") or reference_kind(dataset),
            "clip": clip,
            "clip_protocol": clip_protocol_text(clip, settings, self._reference.get("kind") or reference_kind(dataset)),
            "extractor": injected if self._injected else settings["extractor"],
            "extractor_weights": str(path) if path else None,
            "extractor_weights_sha256": sha256_file(path) if path and Path(str(path)).is_file() else None,
            "detector_call": "uint8 (N, 3, T, H, W); rescale=True, resize=True (224x224), return_features=True",
            "num_frames": int(settings["num_frames"]), "num_real": int(settings["num_real"]),
            "num_generated": self._last.get("num_generated"), "clip_shape": self._last.get("clip_shape"),
            "reference": f"{'reference_video' if hasattr(dataset, 'reference_video') else 'reference'}"
                         f"({settings['num_real']}, seed={self.seed}) of {dataset.name}",
            "covariance": "1/(N-1)", "labels": "class-balanced (i mod num_classes)",
        }


def reference_kind(dataset) -> str:
    """"real clips" or "VAE reconstructions": the dataset's own answer (reference_kind()), else what its shape
    says (pixel clips are the data; latent clips are decoded, i.e. reconstructed, by the dataset's VAE)."""
    if hasattr(dataset, "reference_kind"):
        return str(dataset.reference_kind())
    if tuple(dataset.sample_shape)[0] == 3 or hasattr(dataset, "reference_video"):
        return "real clips"
    return "VAE reconstructions"


def clip_protocol(dataset, settings: dict[str, Any], measured: dict[str, Any]) -> dict[str, Any]:
    """{"frames", "stride", "size"} of the clips the I3D saw (stride None where the dataset does not say)."""
    spec = getattr(dataset, "spec", None)
    size = measured.get("size")
    if size is None and getattr(spec, "resolution", None):
        size = [int(spec.resolution)] * 2
    if size is None and tuple(dataset.sample_shape)[0] == 3:
        size = list(tuple(dataset.sample_shape)[-2:])
    return {"frames": int(settings["num_frames"]), "stride": getattr(spec, "stride", None),
            "size": None if size is None else [int(x) for x in size]}


def clip_protocol_text(clip: dict[str, Any], settings: dict[str, Any], kind: str) -> str:
    """One sentence: StyleGAN-V's fvd2048_16f, or what ours is and that it is not that."""
    ours = (f"{settings['num_real']} {kind} and {settings['num_generated']} generated clips of {clip['frames']} frames "
            f"at stride {clip['stride'] if clip['stride'] is not None else 'not recorded'}, "
            f"{'x'.join(map(str, clip['size'])) if clip['size'] else 'size not recorded'} px")
    if (clip["stride"] == 1 and clip["frames"] == 16 and int(settings["num_real"]) == 2048
            and int(settings["num_generated"]) == 2048 and kind == "real clips"):
        return f"StyleGAN-V fvd2048_16f: {ours}"
    return (f"not StyleGAN-V's fvd2048_16f (2048 real and 2048 generated clips of 16 consecutive frames): {ours}; "
            "compare only with FVDs of this protocol")
