"""The GPU-hours a cell will take, estimated from FLOPs before it runs (`flowzoo bench SUITE --dry-run`).

    GPU-hours = (training FLOPs + sampling FLOPs) / (peak bf16 FLOP/s x model-FLOPs utilisation) / 3600

- training FLOPs: the measured network passes per step of the cell's objective (forward / JVP / backward,
  flowzoo.leaderboard.compute_cost.passes_per_step) x the backbone's forward FLOPs per sample
  (torch.utils.flop_counter on a network built on the meta device: no memory, no weights) x batch x steps,
  with backward = 2 and JVP = 2 forwards, as the records count them;
- sampling FLOPs: the final evaluation, num_samples x the NFEs of every sampler (x2 with test-time CFG),
  plus the 1-NFE curve points when eval.curve is on. Decoders (the VAE) and feature networks
  (Inception, I3D) are not counted.

The utilisation is an assumption (``--mfu``, default 0.35); the step costs `benchmarks/gpu_check.sh`
measures on the device give the real one. Records of runs on a GPU carry the measured GPU-hours
(training wall time x processes), so estimate and measurement sit side by side.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from flowzoo.bench.perf import PEAK_BF16_TFLOPS

DEFAULT_MFU = 0.35
DEFAULT_PEAK_TFLOPS = PEAK_BF16_TFLOPS["H100 SXM"]  # dense bf16


def _kinetics_videos(data: dict[str, Any]) -> tuple[tuple[int, ...], int]:
    frames, resolution = int(data.get("frames", 16)), int(data.get("resolution", 64))
    return (3, frames, resolution, resolution), 700


def _fashion_mnist_images(data: dict[str, Any]) -> tuple[tuple[int, ...], int]:
    from flowzoo.data.fashion_mnist import FashionMNIST  # its class attributes: no files are read

    return FashionMNIST.sample_shape, FashionMNIST.num_classes


# Used only when the dataset cannot be opened (no --data given to a dry run): ImageNet as SD-VAE latents of
# 256x256 images, Kinetics-700 as pixel clips at the configured frames and resolution (configs/data/),
# Fashion-MNIST as the dataset class declares it.
KNOWN_SHAPES = {"imagenet256": lambda data: ((4, 32, 32), 1000), "kinetics700": _kinetics_videos,
                "fashion_mnist": _fashion_mnist_images}


def data_shape(cfg: dict[str, Any]) -> tuple[tuple[int, ...], int, str]:
    """(sample shape, number of classes, where they came from) of the cell's dataset."""
    from flowzoo.data import dataset_from_config, parse_data_name

    name = parse_data_name(cfg["data"]["name"])
    try:
        dataset = dataset_from_config(cfg["data"])
        return tuple(dataset.sample_shape), int(getattr(dataset, "num_classes", 0) or 0), "data"
    except Exception:  # noqa: BLE001 (a dry run before the data is at hand still gets an estimate where it can)
        if name in KNOWN_SHAPES:
            shape, classes = KNOWN_SHAPES[name](cfg["data"])
            return shape, classes, "assumed"
        raise


def forward_flops(cfg: dict[str, Any], shape: tuple[int, ...], num_classes: int) -> float:
    """FLOPs of one forward of the cell's backbone for one sample, counted on the meta device."""
    from flowzoo.leaderboard.compute_cost import forward_flops_per_sample
    from flowzoo.pipeline.run import build_network

    stand_in = SimpleNamespace(sample_shape=shape, num_classes=num_classes, name=cfg["data"]["name"])
    with torch.device("meta"):
        net = build_network(cfg["backbone"], stand_in, int(cfg.get("seed", 0)))
    return forward_flops_per_sample(net, shape, num_classes)


def sampling_nfe(cfg: dict[str, Any], default_sampler_nfe: tuple[int, ...] = (1, 2)) -> int:
    """Network evaluations per sample over the final evaluation and the training curve."""
    ev = cfg.get("eval", {}) or {}
    samplers = ev.get("samplers") or {"default": list(default_sampler_nfe)}
    per_sample = sum(sum(nfes) for nfes in samplers.values())
    if float(ev.get("guidance", 1.0)) != 1.0:
        per_sample *= 2  # a conditional and an unconditional call per step
    if ev.get("curve"):
        train = cfg.get("train", {})
        per_sample += int(train.get("steps", 0)) // max(int(train.get("sample_every", 1) or 1), 1)
    return per_sample


def cell_estimate(cfg: dict[str, Any], *, peak_tflops: float = DEFAULT_PEAK_TFLOPS, mfu: float = DEFAULT_MFU) -> dict[str, Any]:
    """{"train_flops", "sample_flops", "gpu_hours", "shape_from"} of one resolved run config."""
    from flowzoo.leaderboard.compute_cost import passes_per_step, train_flops

    if not 0 < mfu <= 1 or peak_tflops <= 0:
        raise ValueError(f"--mfu must lie in (0, 1] and --peak-tflops be positive (got {mfu}, {peak_tflops}).")
    shape, num_classes, shape_from = data_shape(cfg)
    spec = dict(cfg["objective"])
    name = spec.pop("name")
    steps, batch = int(cfg["train"]["steps"]), int(cfg["train"]["batch_size"])
    passes = passes_per_step(name, spec, steps, num_classes=max(num_classes, 1))
    flops = forward_flops(cfg, shape, num_classes)
    training = train_flops(passes, flops, batch, steps)
    sample_flops = flops * int((cfg.get("eval", {}) or {}).get("num_samples", 0) or 0) * sampling_nfe(cfg)
    seconds = (training + sample_flops) / (peak_tflops * 1e12 * mfu)
    return {"train_flops": training, "sample_flops": sample_flops, "gpu_hours": seconds / 3600,
            "shape_from": shape_from, "passes_per_step": passes}
