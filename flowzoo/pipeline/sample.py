"""`flowzoo sample` and `flowzoo eval`: a checkpoint back into a network, then samples or metrics.

A checkpoint lives in RUN/checkpoints/; the run's config.yaml beside it says which backbone and data
it was trained with. Loading is weights-only (no code from the file ever runs), and a run directory is
data: the names its config.yaml gives (backbone, objective, data) must be registered ones; an import path
there is refused, never imported (DESIGN.md §4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from flowzoo.config import ConfigError, load_yaml
from flowzoo.data import dataset_from_config
from flowzoo.eval.plots import figure_title
from flowzoo.pipeline.evaluate import MetricsNotFinite, evaluate, generate, nonfinite_metrics, results_table, write_samples_figure
from flowzoo.atomic import atomic_write, remove_stale_temps, write_json
from flowzoo.pipeline.run import build_network
from flowzoo.precision import set_tf32
from flowzoo.registry import OBJECTIVES, SAMPLERS, RegistryError
from flowzoo.train import load_checkpoint
from flowzoo.train.checkpoint import CheckpointError, load_weights


def load_run(checkpoint: str | Path, ema_index: int = 0):
    """(network with the chosen weights, dataset, run config) for a checkpoint of a flowzoo run."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ConfigError(f"checkpoint {checkpoint} does not exist.")
    config_path = checkpoint.resolve().parent.parent / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{config_path} is missing; a checkpoint is read together with its run's config.yaml.")
    cfg = load_yaml(config_path)  # one sentence (ConfigError) when it is torn or not a mapping
    missing = [key for key in ("data", "backbone", "seed", "objective") if key not in cfg]
    if missing:
        raise ConfigError(f"{config_path} lacks {', '.join(missing)}; it is not a complete flowzoo run config "
                          f"(was it truncated or edited?).")
    try:
        ckpt = load_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    try:  # names from the run directory: registered ones only (trusted=False), checked before anything is built
        OBJECTIVES.entry(str(cfg["objective"]["name"]), trusted=False)
        dataset = dataset_from_config(cfg["data"])
        net = build_network(cfg["backbone"], dataset, int(cfg["seed"]), trusted=False)
    except RegistryError as exc:
        raise ConfigError(f"{config_path}: {exc}") from None
    if ema_index == -1:
        state = ckpt["model"]
    else:
        if not 0 <= ema_index < len(ckpt["ema"]):
            raise ConfigError(f"{checkpoint} holds {len(ckpt['ema'])} EMA(s); choose --ema in 0..{len(ckpt['ema']) - 1} or -1 for raw weights.")
        state = ckpt["ema"][ema_index]["net"]
    try:
        load_weights(net, state, checkpoint)  # another backbone's weights: one sentence naming the file
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    net.eval()
    set_tf32(bool((cfg.get("train") or {}).get("tf32", False)))  # sample as the run trained: fp32 unless it chose TF32
    return net, dataset, cfg, ckpt


def _sampler_for(cfg: dict[str, Any], sampler: str | None) -> str:
    if sampler is None:
        sampler = getattr(OBJECTIVES.get(cfg["objective"]["name"], trusted=False), "default_sampler", "meanflow")
    SAMPLERS.get(sampler)
    return sampler


def sample_checkpoint(checkpoint, *, nfe: int, sampler: str | None, num_samples: int, guidance: float, seed: int,
                      ema_index: int = 0, out_stem: Path | None = None, env=None) -> tuple[Path, Path] | None:
    """STEM.png and STEM.npz; STEM is `out_stem` as given (``model.v1`` -> model.v1.png), by default
    RUN/samples/SAMPLER-nfeN-stepS-seedK beside the checkpoint's run directory (never the `out` its
    config.yaml names: the run may have moved). Both files are written atomically.

    Under torchrun (`env` of several ranks) each rank draws its contiguous share of the samples on its
    device and rank 0 gathers and writes them (other ranks return None); sample i is the same for any
    batch size and any number of ranks."""
    from flowzoo.pipeline.evaluate import shard
    from flowzoo.train.distributed import DistEnv, gather_to_main

    env = env or DistEnv()
    net, dataset, cfg, ckpt = load_run(checkpoint, ema_index)
    net.to(env.device)
    sampler = _sampler_for(cfg, sampler)
    run_dir = Path(checkpoint).resolve().parent.parent  # RUN/checkpoints/CKPT.pt
    stem = Path(out_stem) if out_stem else run_dir / "samples" / f"{sampler}-nfe{nfe}-step{ckpt['step']}-seed{seed}"
    if not stem.name or stem.name in (".", ".."):
        raise ConfigError(f"--out {out_stem} names no file stem; give one such as samples/model-v1.")
    png, npz = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".npz")
    x, labels = generate(net, dataset, sampler, nfe, num_samples, seed, guidance,
                         indices=shard(num_samples, env.rank, env.world_size))
    shares = gather_to_main((x, labels), env)
    if not env.is_main:
        return None
    x = torch.cat([share[0] for share in shares])
    labels = None if labels is None else torch.cat([share[1] for share in shares])
    remove_stale_temps(stem.parent, [png.name, npz.name])  # temp files of an earlier, killed `flowzoo sample`
    title = figure_title(cfg["objective"]["name"], sampler, nfe, ckpt["step"], seed, guidance)
    arrays = {"samples": x.numpy(), "labels": (labels.numpy() if labels is not None else np.array([])),
              "nfe": nfe, "sampler": sampler, "step": ckpt["step"], "seed": seed}
    atomic_write(npz, lambda handle: np.savez(handle, **arrays))
    write_samples_figure(x, dataset, png, seed, title, labels)
    return png, npz


def evaluate_checkpoint(checkpoint, *, nfes: list[int], sampler: str | None, num_samples: int | None, seed: int,
                        ema_index: int = 0, console: Console | None = None, env=None) -> dict[str, Any] | None:
    """Every metric at each NFE, written to CKPT.eval-seedK.json. Under torchrun the samples are split over
    the ranks and rank 0 gathers the metrics' summaries (features) and writes the file (others: None)."""
    from flowzoo.train.distributed import DistEnv

    env = env or DistEnv()
    net, dataset, cfg, ckpt = load_run(checkpoint, ema_index)
    net.to(env.device)
    sampler = _sampler_for(cfg, sampler)
    n = num_samples or int(cfg.get("eval", {}).get("num_samples", 300))
    evaluation = evaluate(net, dataset, {sampler: list(nfes)}, num_samples=n, seed=seed, env=env)
    if evaluation is None:
        return None
    record = {"checkpoint": str(checkpoint), "step": ckpt["step"], "ema": ema_index, **evaluation}
    out = Path(checkpoint).with_suffix(f".eval-seed{seed}.json")
    not_finite = nonfinite_metrics(evaluation)
    if not_finite:  # a NaN is not a result: no file (an earlier one stays), a non-zero exit
        if console is not None:
            console.print(results_table(f"{checkpoint} (step {ckpt['step']}, not finite)", evaluation["results"],
                                        evaluation["reference"]))
        raise MetricsNotFinite(
            f"the metrics of {checkpoint} are not finite ({', '.join(not_finite[:4])}"
            f"{', ...' if len(not_finite) > 4 else ''}), so {out.name} was not written: the checkpoint's weights "
            f"(or this EMA, --ema {ema_index}) may hold NaN; try another checkpoint or --ema -1.")
    write_json(out, record)
    if console is not None:
        console.print(results_table(f"{checkpoint} (step {ckpt['step']})", evaluation["results"], evaluation["reference"]))
        console.print(f"wrote {out}")
    return record
