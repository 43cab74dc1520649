"""`flowzoo bench imagenet256`: the paper-scale suite, its torchrun launch, GPU-hour estimates and records.

The suite's cells are the published recipes (configs/experiment/) with the ablation's changes; the dry run
prints torchrun commands with FLOP-based GPU-hour estimates (forward FLOPs checked against the DiT paper's
own count); end to end, two cells run under torchrun on a stand-in latent cache with DiT-tiny/2 on CPU and
their records land beside the reported rows on the leaderboard.
"""

from __future__ import annotations

import shlex

import pytest
import torch

from flowzoo.bench.estimate import cell_estimate, forward_flops
from flowzoo.bench.launch import Launch
from flowzoo.bench.suite import get_suite, only_methods, with_overrides
from flowzoo.config import ConfigError
from flowzoo.leaderboard.compute_cost import forward_flops_per_sample
from test_cli import flowzoo


def cells_by_method(suite):
    return {cell.method.name: cell.resolved_config("unused") for cell in suite.cells()}


def test_the_suite_is_the_published_recipes_with_the_ablations_changes():
    suite = get_suite("imagenet256")
    cfg = cells_by_method(suite)
    assert sorted(cfg) == sorted(["constant-0", "sigmoid-whole", "sigmoid-middle", "fm75-constant-0", "fm25-sigmoid-whole",
                                  "meanflow-XL2-cfg", "alphaflow-XL2-cfg"])
    from flowzoo.leaderboard.reported import load_reported

    ablation = next(s for s in load_reported() if s.key == "alpha_flow_ablation_B2_400k")
    assert "imagenet256" in ablation.benchmarks  # the paper's five rows are shown beside this suite's
    assert {row["flowzoo_method"] for row in ablation.rows} <= set(cfg)
    for name in ("constant-0", "sigmoid-whole", "sigmoid-middle", "fm75-constant-0", "fm25-sigmoid-whole"):
        c = cfg[name]
        assert (c["backbone"]["name"], c["train"]["steps"], c["train"]["batch_size"]) == ("DiT-B/2", 400_000, 256), name
        assert c["objective"]["shift"] == "data" and c["objective"]["label_dropout"] == 0.0  # no CFG
    assert cfg["constant-0"]["objective"]["alpha"] == {"name": "constant", "value": 0.0}
    assert cfg["sigmoid-whole"]["objective"]["alpha"]["k_s"] == 0 and cfg["sigmoid-whole"]["objective"]["alpha"]["k_e"] == 400_000
    assert (cfg["sigmoid-middle"]["objective"]["alpha"]["k_s"], cfg["sigmoid-middle"]["objective"]["alpha"]["k_e"]) == (150_000, 250_000)
    assert cfg["sigmoid-middle"]["objective"]["alpha"]["gamma"] == 25.0  # the rest of the recipe's sigmoid stays
    assert [cfg[n]["objective"]["fm_ratio"] for n in ("sigmoid-whole", "fm75-constant-0", "fm25-sigmoid-whole")] == [0.5, 0.75, 0.25]
    for name, objective in (("meanflow-XL2-cfg", "meanflow"), ("alphaflow-XL2-cfg", "alphaflow")):
        c = cfg[name]
        assert (c["backbone"]["name"], c["train"]["steps"], c["objective"]["name"]) == ("DiT-XL/2", 1_200_000, objective)
        assert c["objective"]["shift"]["name"] == "cfg"
    assert all(c["eval"]["curve"] is False and c["eval"]["num_samples"] == 50_000 for c in cfg.values())


def test_forward_flops_on_the_meta_device_match_the_dit_papers_count_and_a_real_network():
    # Peebles & Xie 2023 (DiT), Table 4: B/2 23.01 and XL/2 118.64 GFLOPs per 256x256 forward, counted as
    # multiply-adds; torch's flop counter counts 2 per multiply-add.
    for name, paper in (("DiT-B/2", 23.01e9), ("DiT-XL/2", 118.64e9)):
        flops = forward_flops({"backbone": {"name": name}, "data": {"name": "imagenet256"}}, (4, 32, 32), 1000)
        assert flops / 2 == pytest.approx(paper, rel=2e-3), name
    from flowzoo.backbones import create_backbone

    real = create_backbone("DiT-tiny/2", input_size=8, in_channels=4, num_classes=10)
    meta = forward_flops({"backbone": {"name": "DiT-tiny/2"}, "data": {"name": "imagenet256"}}, (4, 8, 8), 10)
    # On a CPU tensor torch's flop counter does not see SDPA's CPU kernel; on meta it counts the attention's two
    # matmuls (Q K^T and A V, 2 N^2 d FLOPs each) in every block: 4 blocks, N = 16 tokens, d = 128.
    depth, tokens, width = 4, 16, 128
    assert meta - forward_flops_per_sample(real, (4, 8, 8), 10) == depth * 2 * (2 * tokens**2 * width)


def test_gpu_hour_estimate_is_flops_over_sustained_throughput():
    cfg = cells_by_method(get_suite("imagenet256"))["sigmoid-whole"]
    cfg = {**cfg, "objective": {"name": "flow_matching"}}  # one forward and one backward per step, no JVP
    est = cell_estimate(cfg, peak_tflops=1000.0, mfu=0.5)
    fwd = forward_flops(cfg, (4, 32, 32), 1000)
    assert est["passes_per_step"] == {"forward": 1.0, "jvp": 0.0, "backward": 1.0}
    assert est["train_flops"] == pytest.approx(3 * fwd * 256 * 400_000)
    assert est["sample_flops"] == pytest.approx(fwd * 50_000 * (1 + 2))  # the meanflow sampler at 1 and 2 NFE
    assert est["gpu_hours"] == pytest.approx((est["train_flops"] + est["sample_flops"]) / (1000e12 * 0.5) / 3600)
    with pytest.raises(ValueError, match="--mfu must lie in"):
        cell_estimate(cfg, mfu=0)


def test_launch_options_are_checked_in_one_sentence():
    assert Launch(8).shown(["--seed", "0"]) == "torchrun --standalone --nproc-per-node=8 -m flowzoo run --seed 0"
    two = Launch(8, nnodes=2, node_rank=1, master_addr="10.0.0.1")
    assert two.world_size == 16 and not two.writes_records
    assert "--nnodes=2 --node-rank=1 --master-addr=10.0.0.1 --master-port=29500" in two.shown([])
    argv = two.argv(["--seed", "0"])
    assert argv[1:3] == ["-m", "torch.distributed.run"] and argv[-4:] == ["flowzoo", "run", "--seed", "0"]
    for kwargs, match in (({"nproc_per_node": 0}, "at least 1"), ({"nproc_per_node": 8, "nnodes": 2}, "--master-addr"),
                          ({"nnodes": 2, "master_addr": "h"}, "needs --nproc-per-node"),
                          ({"nproc_per_node": 8, "nnodes": 2, "node_rank": 2, "master_addr": "h"}, "--node-rank must lie")):
        with pytest.raises(ConfigError, match=match):
            Launch(**kwargs)
    with pytest.raises(ConfigError, match="has no method 'nope'"):
        only_methods(get_suite("imagenet256"), "sigmoid-whole,nope")


def test_dry_run_prints_torchrun_commands_and_gpu_hours(tmp_path, capsys):
    code, out, err = flowzoo("bench", "imagenet256", "--dry-run", "--nproc-per-node", "8", "--methods",
                             "sigmoid-whole,meanflow-XL2-cfg", "--runs", str(tmp_path), "--results", str(tmp_path / "r"),
                             capsys=capsys)
    assert code == 0, err
    lines = out.splitlines()
    commands = [line for line in lines if line.startswith("torchrun")]
    assert len(commands) == 2
    assert commands[0].startswith("torchrun --standalone --nproc-per-node=8 -m flowzoo run --config "
                                  "configs/experiment/alphaflow-B2.yaml --objective alphaflow")
    estimates = [line for line in lines if "GPU-hours" in line and line.startswith("# imagenet256/")]
    assert len(estimates) == 2 and "on 8 GPUs" in estimates[0]
    assert lines[-1].startswith("# total: est.") and "35% MFU" in lines[-1]
    code, _, err = flowzoo("bench", "imagenet256", "--dry-run", "--nnodes", "2", "--nproc-per-node", "8", capsys=capsys)
    assert code == 2 and "--master-addr" in err and len(err.strip().splitlines()) == 1


class PoolFeatures(torch.nn.Module):
    """A TorchScript stand-in for the NVIDIA Inception: 4x4 average-pooled RGB of the 299x299 input (48-d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


@pytest.fixture(scope="module")
def standin_imagenet(tmp_path_factory):
    pytest.importorskip("diffusers")
    from imagenet_standins import make_image_folder, tiny_vae

    from flowzoo.data.imagenet import prepare_latents
    from flowzoo.eval.fid import reference_from_folder

    root = tmp_path_factory.mktemp("in256")
    data = make_image_folder(root / "train", per_class=3)
    prepare_latents(data, str(tiny_vae(root / "vae")), root / "latents", shard_size=4, batch_size=4, image_size=32,
                    progress=False, log=lambda s: None)
    torch.jit.save(torch.jit.script(PoolFeatures()), str(root / "inception.pt"))
    reference_from_folder(data, root / "ref.npz", extractor="nvidia_inception", weights=str(root / "inception.pt"), image_size=32)
    return root


def test_two_cells_run_under_torchrun_and_land_beside_the_reported_rows(standin_imagenet, tmp_path, capsys):
    from flowzoo.leaderboard.record import read_record

    root = standin_imagenet
    runs, results = tmp_path / "runs", tmp_path / "results"
    tiny = ["backbone.name=DiT-tiny/2", "train.steps=2", "train.batch_size=4", "train.precision=fp32",
            "train.warmup_steps=0", "eval.num_samples=6", "eval.previews=false",
            f"data.fid={{reference: {root / 'ref.npz'}, extractor: nvidia_inception, weights: {root / 'inception.pt'}, batch_size: 6}}"]
    args = ["bench", "imagenet256", "--data", str(root / "latents"), "--nproc-per-node", "1", "--threads", "1",
            "--methods", "sigmoid-whole,meanflow-XL2-cfg", "--runs", str(runs), "--results", str(results)]
    args += [a for item in tiny for a in ("--set", item)]
    code, out, err = flowzoo(*args, capsys=capsys)
    assert code == 0, out + err
    assert "2 trained" in out
    for method, objective in (("sigmoid-whole", "alphaflow"), ("meanflow-XL2-cfg", "meanflow")):
        record = read_record(results / "imagenet256" / "imagenet256" / f"{method}-s0.json")
        assert record["preset"] == objective and record["backbone"] == "DiT-tiny/2"
        assert record["command"].startswith("torchrun --standalone --nproc-per-node=1 -m flowzoo run --config configs/experiment/")
        assert record["compute"]["steps"] == 2 and record["compute"]["world_size"] == 1
        assert record["compute"]["gpu_hours"] is None  # measured GPU-hours only where a GPU ran
        fids = {(e["sampler"], e["nfe"]): e["metrics"]["fid"] for e in record["evaluations"]}
        assert set(fids) == {("meanflow", 1), ("meanflow", 2)} and all(v > 0 for v in fids.values())
        # The recorded command, with the stand-in's --set and --data, is the config the runner trained.
        shown = shlex.split(record["command"])
        assert shown[shown.index("--config") + 1] == f"configs/experiment/{'alphaflow-B2' if objective == 'alphaflow' else 'meanflow-XL2-cfg'}.yaml"
    assert read_record(results / "imagenet256" / "imagenet256" / "sigmoid-whole-s0.json")["config"]["objective"]["fm_ratio"] == 0.5

    # Re-running finds both cells done and trains nothing (--allow-dirty: a working copy with edits counts too).
    code, out, err = flowzoo(*args, "--allow-dirty", capsys=capsys)
    assert code == 0 and "2 have valid records" in out and "0 trained" in out, out + err

    board = tmp_path / "board"
    code, out, err = flowzoo("leaderboard", "build", "--results", str(results), "--out", str(board), "--allow-dirty",
                             capsys=capsys)
    assert code == 0, err
    page = (board / "README.md").read_text()
    section = page[page.index("## imagenet256"):]
    assert "sigmoid-whole" in section and "meanflow-XL2-cfg" in section
    assert "alpha-Flow's schedule ablation at paper scale" in section and "ImageNet 256x256, class-conditional" in section
