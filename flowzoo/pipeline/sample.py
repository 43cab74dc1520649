"""`flowzoo sample` and `flowzoo eval`: a checkpoint back into a network, then samples or metrics.

A checkpoint lives in RUN/checkpoints/; the run's config.yaml beside it says which backbone and data
it was trained with. Loading is weights-only (no code from the file ever runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from flowzoo.config import ConfigError, load_yaml
from flowzoo.data import create_dataset
from flowzoo.eval.plots import figure_title
from flowzoo.pipeline.evaluate import evaluate, generate, results_table, write_samples_figure
from flowzoo.atomic import write_json
from flowzoo.pipeline.run import build_network
from flowzoo.registry import OBJECTIVES, SAMPLERS
from flowzoo.train import load_checkpoint
from flowzoo.train.checkpoint import CheckpointError


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
    dataset = create_dataset(cfg["data"]["name"], **{k: v for k, v in cfg["data"].items() if k != "name"})
    net = build_network(cfg["backbone"], dataset, int(cfg["seed"]))
    if ema_index == -1:
        state = ckpt["model"]
    else:
        if not 0 <= ema_index < len(ckpt["ema"]):
            raise ConfigError(f"{checkpoint} holds {len(ckpt['ema'])} EMA(s); choose --ema in 0..{len(ckpt['ema']) - 1} or -1 for raw weights.")
        state = ckpt["ema"][ema_index]["net"]
    net.load_state_dict(state)
    net.eval()
    return net, dataset, cfg, ckpt


def _sampler_for(cfg: dict[str, Any], sampler: str | None) -> str:
    if sampler is None:
        sampler = getattr(OBJECTIVES.get(cfg["objective"]["name"]), "default_sampler", "meanflow")
    SAMPLERS.get(sampler)
    return sampler


def sample_checkpoint(checkpoint, *, nfe: int, sampler: str | None, num_samples: int, guidance: float, seed: int,
                      ema_index: int = 0, out_stem: Path | None = None) -> tuple[Path, Path]:
    net, dataset, cfg, ckpt = load_run(checkpoint, ema_index)
    sampler = _sampler_for(cfg, sampler)
    x, labels = generate(net, dataset, sampler, nfe, num_samples, seed, guidance)
    stem = Path(out_stem) if out_stem else Path(cfg["out"]) / "samples" / f"{sampler}-nfe{nfe}-step{ckpt['step']}-seed{seed}"
    title = figure_title(cfg["objective"]["name"], sampler, nfe, ckpt["step"], seed, guidance)
    png = write_samples_figure(x, dataset, stem.with_suffix(".png"), seed, title, labels)
    npz = stem.with_suffix(".npz")
    np.savez(npz, samples=x.numpy(), labels=(labels.numpy() if labels is not None else np.array([])),
             nfe=nfe, sampler=sampler, step=ckpt["step"], seed=seed)
    return png, npz


def evaluate_checkpoint(checkpoint, *, nfes: list[int], sampler: str | None, num_samples: int | None, seed: int,
                        ema_index: int = 0, console: Console | None = None) -> dict[str, Any]:
    net, dataset, cfg, ckpt = load_run(checkpoint, ema_index)
    sampler = _sampler_for(cfg, sampler)
    n = num_samples or int(cfg.get("eval", {}).get("num_samples", 300))
    evaluation = evaluate(net, dataset, {sampler: list(nfes)}, num_samples=n, seed=seed)
    record = {"checkpoint": str(checkpoint), "step": ckpt["step"], "ema": ema_index, **evaluation}
    out = Path(checkpoint).with_suffix(f".eval-seed{seed}.json")
    write_json(out, record)
    if console is not None:
        console.print(results_table(f"{checkpoint} (step {ckpt['step']})", evaluation["results"], evaluation["reference"]))
        console.print(f"wrote {out}")
    return record
