"""Evaluation of a trained model: samples per (sampler, NFE), every metric that supports the data.

Results are keyed "sampler@nfe" (e.g. "meanflow@1"); reference points (noise floors etc.) are measured
once per dataset by the same metric objects, so each number sits beside its floor.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rich.table import Table

from flowzoo.eval import balanced_labels, metrics_for, save_image_grid, save_toy_scatter
from flowzoo.eval.plots import figure_title, save_video_gif, save_video_strips
from flowzoo.samplers import sample
from flowzoo.samplers.noise import SampleNoise, noise_block, starting_noise
from flowzoo.train import TrainingDiverged


def shard(num_samples: int, rank: int, world_size: int) -> list[int]:
    """The contiguous share of sample indices 0 .. num_samples - 1 that `rank` of `world_size` generates
    (rank order = index order, so rank 0 gathers the shares by concatenation)."""
    return list(range(num_samples * rank // world_size, num_samples * (rank + 1) // world_size))


def generate(model: nn.Module, dataset, sampler: str, nfe: int, num_samples: int, seed: int,
             guidance: float = 1.0, batch_size: int | None = None, indices: list[int] | None = None,
             labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Samples `indices` (default: 0 .. num_samples - 1) with class-balanced labels for conditional data,
    or with `labels`, one class per index, where given.

    Sample i depends only on (seed, i): its starting noise and any noise the sampler draws are addressed
    by its index (flowzoo.samplers.noise), and its label is i mod classes, so any batch size, or any split
    of the indices over ranks, gives the same samples. batch_size defaults to the noise block (1000
    samples, fewer for big samples: at most 2^24 elements a batch).
    """
    indices = list(range(num_samples)) if indices is None else [int(i) for i in indices]
    if batch_size is None:
        batch_size = noise_block(dataset.sample_shape)
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if len(labels) != len(indices):
            raise ValueError(f"{len(labels)} labels were given for {len(indices)} samples; give one per sample.")
    elif dataset.num_classes > 0:
        labels = balanced_labels(num_samples, dataset.num_classes)[torch.as_tensor(indices, dtype=torch.long)]
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        noise = starting_noise(seed, chunk, dataset.sample_shape).to(device)
        cond = None if labels is None else labels[start:start + len(chunk)].to(device)
        chunks.append(sample(sampler, model, noise, nfe=nfe, cond=cond, guidance=guidance,
                             generator=SampleNoise(seed, chunk)).cpu())
    return torch.cat(chunks), labels


def figure_count(dataset, num_samples: int) -> int:
    """How many samples write_samples_figure shows: every one for a 2-D toy's scatter, else a 10 x 10 grid."""
    return num_samples if len(dataset.sample_shape) == 1 else 100


@contextmanager
def eval_mode(net: nn.Module):
    """The network in eval mode for the block, then back in the mode it was in (hooks run mid-training)."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


def class_names(dataset, labels: torch.Tensor | None) -> list[str] | None:
    """Each sample's class as the figure shows it: the dataset's class name where it has them, else the index."""
    if labels is None:
        return None
    names = getattr(dataset, "classes", None)
    return [str(names[i]) if names is not None and i < len(names) else str(i) for i in labels.tolist()]


def write_samples_figure(x: torch.Tensor, dataset, path: Path, seed: int = 0, title: str | None = None,
                         labels: torch.Tensor | None = None) -> Path:
    """A PNG a person can look at: an image grid, a scatter against real data for 2-D toys, or for video
    clips (C, F, H, W) one clip per row with its frames along it (and the same clips as a GIF beside it).

    `title` (see flowzoo.eval.plots.figure_title) heads the figure; `labels`, the samples' classes, name
    the grid's columns."""
    shape = tuple(dataset.sample_shape)
    if len(shape) == 4 and (shape[0] == 3 or hasattr(dataset, "decode_video")):
        clips = x[:8]
        if hasattr(dataset, "decode_video"):  # e.g. latent clips: uint8 (N, 3, F, H, W) pixels
            clips = dataset.decode_video(clips).float() / 127.5 - 1.0
        save_video_gif(clips, Path(path).with_suffix(".gif"))
        return save_video_strips(clips, path, title=title)
    if hasattr(dataset, "decode_for_display"):  # latents: show the decoded images, at their own size
        names = class_names(dataset, None if labels is None else labels[:64])
        return save_image_grid(dataset.decode_for_display(x[:64]), path, nrow=8, scale=1, title=title, labels=names)
    if len(dataset.sample_shape) == 1:
        real, _ = dataset.reference(len(x), seed=seed + 1)
        return save_toy_scatter(x, real, path, title=title)
    names = class_names(dataset, None if labels is None else labels[:100])
    return save_image_grid(x[:100], path, nrow=10, title=title, labels=names)


@torch.no_grad()
def evaluate(model: nn.Module, dataset, samplers: dict[str, list[int]], *, num_samples: int, seed: int,
             samples_dir: Path | None = None, guidance: float = 1.0, objective: str | None = None,
             step: int | None = None, env=None) -> dict | None:
    """{"results": {"sampler@nfe": {metric: value}}, "reference": {metric: value}}.

    With `env` (flowzoo.train.distributed.DistEnv) of several ranks, each rank generates its contiguous share
    of the samples and summarises it per metric (features, for FID and FVD); rank 0 gathers the summaries,
    computes the numbers and writes the figures, and returns the record (other ranks return None). The
    samples, and so the numbers, are those of one process: every sample depends only on (seed, index).
    `objective` and `step` only title the sample figures written to `samples_dir`."""
    from flowzoo.train.distributed import DistEnv, gather_to_main

    env = env or DistEnv()
    metrics = metrics_for(dataset, seed=seed)
    results: dict[str, dict[str, float]] = {}
    indices = shard(num_samples, env.rank, env.world_size)
    with eval_mode(model):
        for sampler, nfes in samplers.items():
            for nfe in nfes:
                x, labels = generate(model, dataset, sampler, int(nfe), num_samples, seed, guidance, indices=indices)
                parts = {name: gather_to_main(metric.summarise(x, labels, dataset), env) for name, metric in metrics.items()}
                shown = gather_to_main(x[:figure_count(dataset, num_samples)], env)  # the first samples by index
                if not env.is_main:
                    continue
                results[f"{sampler}@{nfe}"] = {k: v for name, metric in metrics.items()
                                               for k, v in metric.finish(parts[name], dataset).items()}
                if samples_dir is not None:
                    title = figure_title(objective, sampler, int(nfe), step, seed, guidance)
                    figure = torch.cat(shown)[:figure_count(dataset, num_samples)]
                    figure_labels = None if labels is None else balanced_labels(num_samples, dataset.num_classes)[:len(figure)]
                    write_samples_figure(figure, dataset, Path(samples_dir) / f"{sampler}-nfe{nfe}.png", seed, title,
                                         figure_labels)
    if not env.is_main:
        return None
    reference: dict[str, float] = {}
    for metric in metrics.values():
        reference.update(metric.reference(dataset))
    record = {"results": results, "reference": reference, "metrics": sorted(metrics)}
    info = {name: m.info(dataset) for name, m in metrics.items() if hasattr(m, "info")}
    if info:  # what a metric was measured against (e.g. FID reference statistics and their sha256)
        record["metric_info"] = info
    return record


def measure(metrics: dict, x: torch.Tensor, labels: torch.Tensor | None, dataset) -> dict[str, float]:
    """Every metric's numbers for one set of samples, in one mapping."""
    row: dict[str, float] = {}
    for metric in metrics.values():
        row.update(metric(x, labels, dataset))
    return row


def results_table(title: str, results: dict[str, dict[str, float]], reference: dict[str, float] | None = None) -> Table:
    """Rows "sampler@nfe", one column per metric, and the real-data floor as the last row."""
    keys = sorted({k for row in results.values() for k in row})
    table = Table(title=title)
    table.add_column("sampler@nfe")
    for key in keys:
        table.add_column(key, justify="right")
    for name, row in results.items():
        table.add_row(name, *(f"{row[k]:.4g}" if k in row else "" for k in keys))
    floors = {k.split("/", 1)[1]: v for k, v in (reference or {}).items() if k.split("/")[0] in ("heldout", "real")}
    if floors:
        table.add_row("real data (floor)", *(f"{floors[k]:.4g}" if k in floors else "" for k in keys))
    return table


class MetricsNotFinite(TrainingDiverged):
    """An evaluation with a NaN or infinite metric (or reference number): the command exits non-zero and
    writes no result (a run's result.json, an eval's CKPT.eval-seedK.json)."""


def nonfinite_metrics(evaluation: dict[str, Any]) -> list[str]:
    """"sampler@nfe metric = value" for every NaN or infinite number of an evaluation (results and reference)."""
    def bad(value: Any) -> bool:
        return isinstance(value, (int, float)) and not math.isfinite(value)

    found = [f"{key} {name} = {value}" for key, row in evaluation["results"].items() for name, value in row.items()
             if bad(value)]
    return found + [f"reference {name} = {value}" for name, value in evaluation.get("reference", {}).items() if bad(value)]
