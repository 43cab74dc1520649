"""ImageNet experiments: every configs/experiment file validates; DiT-tiny/2 trains, samples, decodes, FID end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flowzoo.config import build_dataclass, config_dir, resolve
from flowzoo.objectives import create_objective
from flowzoo.train import TrainOptions

EXPERIMENTS = sorted((config_dir() / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_resolves_and_validates(path):
    from tiny_nets import TinyVelocityNet

    cfg = resolve(config_file=str(path))
    options = build_dataclass(TrainOptions, {**cfg["train"], "out_dir": "unused", "seed": 0}, "train")
    assert (options.batch_size, options.lr, options.grad_clip, options.warmup_steps) == (256, 1e-4, 16.0, 10_000)
    assert options.ema_halflives == [6931.0] and options.ema_rampup_ratio == 0.05 and options.precision == "bf16"
    assert cfg["data"]["name"] == "imagenet256" and cfg["eval"]["num_samples"] == 50_000
    spec = dict(cfg["objective"])
    objective = create_objective(spec.pop("name"), TinyVelocityNet(dim=4, num_classes=10), total_steps=options.steps, **spec)
    assert objective is not None


def test_recipe_values_reach_the_objective_config():
    cfg = resolve(config_file=str(config_dir() / "experiment" / "alphaflow-XL2-cfg.yaml"))
    assert cfg["backbone"]["name"] == "DiT-XL/2" and cfg["train"]["steps"] == 1_200_000
    assert cfg["objective"]["alpha"]["k_s"] == 600_000 and cfg["objective"]["alpha"]["k_e"] == 1_000_000
    assert cfg["objective"]["shift"] == {"name": "cfg", "omega": 0.2, "kappa": 0.92, "t_min": 0.0, "t_max": 0.75}
    b2 = resolve(config_file=str(config_dir() / "experiment" / "meanflow-B2.yaml"))
    assert b2["objective"]["fm_ratio"] == 0.75 and b2["train"]["steps"] == 400_000


@pytest.mark.parametrize("objective", ["alphaflow", "meanflow"])
def test_tiny_dit_trains_samples_decodes_and_scores_fid(objective, tmp_path):
    pytest.importorskip("diffusers")
    import numpy as np
    from imagenet_standins import PixelFeatures, make_image_folder, tiny_vae

    from flowzoo.data.imagenet import prepare_latents
    from flowzoo.eval.fid import reference_from_folder
    from flowzoo.pipeline.run import run_experiment

    data = make_image_folder(tmp_path / "train", per_class=3)
    cache = tmp_path / "latents"
    prepare_latents(data, str(tiny_vae(tmp_path / "vae")), cache, shard_size=4, batch_size=4, image_size=32,
                    progress=False, log=lambda s: None)
    ref = reference_from_folder(data, tmp_path / "ref.npz", extract=PixelFeatures(), image_size=32)
    assert ref["count"] == 9 and set(np.load(tmp_path / "ref.npz")) >= {"mu", "sigma", "features"}
    cfg = resolve(config_file=str(config_dir() / "experiment" / f"{objective}-B2-cfg.yaml"), data=str(cache),
                  backbone="DiT-tiny/2",
                  sets=["train.precision=fp32", "train.warmup_steps=0", "train.checkpoint_every=2", "train.sample_every=3",
                        "eval.num_samples=12", "eval.samplers={meanflow: [1, 2]}",
                        f"data.fid={{reference: {tmp_path / 'ref.npz'}, extractor: test_pixels, batch_size: 5}}"],
                  flags={"train.steps": 3, "train.batch_size": 4, "out": str(tmp_path / "run")})
    record = run_experiment(cfg, quiet=True)
    row = record["results"]["meanflow@1"]
    assert np.isfinite(row["fid"]) and row["fid"] > 0 and row["is"] >= 1.0 and 0 <= row["precision"] <= 1
    info = record["metric_info"]["imagenet_fid"]
    assert info["reference_sha256"] == ref["sha256"] and info["extractor"] == "test_pixels"
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["results"]["meanflow@2"]["fid"] == record["results"]["meanflow@2"]["fid"]
    assert (tmp_path / "run" / "samples" / "meanflow-nfe1.png").is_file()
