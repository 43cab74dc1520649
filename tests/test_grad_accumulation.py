"""Gradient accumulation (train.batch_per_device): a step in rounds is the step of the whole batch.

In float64 on CPU, so that the only difference left is the order of summation: for every registered
objective, one step's loss, metrics and gradient in rounds are those of the whole batch; two training steps
with the per-rank batch in rounds end with the parameters, EMA and logged metrics of two steps without
rounds, for flow matching, MeanFlow (JVP target) and alpha-Flow with CFG trained in (two-point target,
guided shift velocity, labels dropped inside the CFG interval), on one process and on two gloo ranks (DDP,
and FSDP2 for MeanFlow, each with one gradient synchronisation per step); a run with rounds resumed in the
middle ends bit for bit where it would have; a bad batch_per_device is one sentence.

Adam's update is invariant to the gradient's scale (it divides by sqrt(v)), so with the usual eps a
round that forgot its n_i / B share would go unnoticed in the parameters; eps = 1 makes the update nearly
linear in the gradient, and the logged grad_norm (before clipping) is compared too.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys

import pytest
import torch
from torch import nn

from flowzoo.cli import main
from flowzoo.objectives import create_objective
from flowzoo.registry import OBJECTIVES as REGISTERED
from flowzoo.train import TrainOptions, load_checkpoint, train
from flowzoo.train.accumulation import check_objective, forward_backward
from test_train_support import MixtureStream, finish, free_port, launch, one_thread, tiny_dit, tiny_mlp  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")  # one_thread: a fixture

STEPS = 2
CFG = {"name": "cfg", "omega": 0.2, "kappa": 0.92, "t_min": 0.0, "t_max": 0.75}  # the XL/2-cfg recipe's
# name -> (preset, overrides); alphaflow over two steps: alpha 1 at step 0, 0.5 (two-point target) at step 1.
OBJECTIVES = {"flow_matching": ("flow_matching", {}), "meanflow": ("meanflow", {}),
              "alphaflow_cfg": ("alphaflow", {"shift": CFG})}
COMPARED = ("loss", "grad_norm", "mse", "alpha", "alpha_batch", "fm_ratio", "L_TFM", "L_TC")

WORKER = '''
import json, os, sys
import torch
torch.set_num_threads(1)
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.distributed.fsdp._fully_shard import _fsdp_param_group  # private (torch 2.14): FSDP2's reduce-scatter
from flowzoo.train import distributed
from test_grad_accumulation import OBJECTIVES, run

out_dir, rank = sys.argv[1], int(os.environ["RANK"])
dist.init_process_group("gloo")  # one group for every run below (train() joins it and leaves it up)

# Count the gradient synchronisations: DDP's bucket all-reduces, FSDP2's reduce-scatters.
syncs = {}
wrap_objective, foreach_reduce = distributed.wrap_objective, _fsdp_param_group.foreach_reduce
def counted(tally):
    def hook(state, bucket):
        syncs[tally] = syncs.get(tally, 0) + 1
        return allreduce_hook(None, bucket)  # the default all-reduce (divides by 2, exact)
    return hook
def reduce_counted(*args, **kwargs):
    syncs[tag] = syncs.get(tag, 0) + 1
    return foreach_reduce(*args, **kwargs)
def wrap_counted(objective, env):
    ddp = wrap_objective(objective, env)
    ddp.register_comm_hook(None, counted(tag))
    return ddp
distributed.wrap_objective, _fsdp_param_group.foreach_reduce = wrap_counted, reduce_counted

runs = [(name, "ddp", bpd) for name in OBJECTIVES for bpd in (None, 1)] + [("meanflow", "fsdp", bpd) for bpd in (None, 1)]
for name, parallel, bpd in runs:
    tag = f"{name}-{parallel}-{bpd}"
    state = run(os.path.join(out_dir, tag), *OBJECTIVES[name], bpd, parallel=parallel)
    torch.save({"net": state.net.state_dict(), "ema": state.ema_net.state_dict()}, os.path.join(out_dir, f"{tag}-rank{rank}.pt"))
with open(os.path.join(out_dir, f"syncs-rank{rank}.json"), "w") as f:
    json.dump(syncs, f)
dist.destroy_process_group()
'''


class Float64Stream(MixtureStream):
    def next(self):
        x, y = super().next()
        return x.double(), y


class Float64Mixture:
    """The mixture's batches in float64; train() builds each rank's stream (its share, its seed) from it."""

    def stream(self, batch_size: int, seed: int) -> Float64Stream:
        return Float64Stream(batch_size, seed)


def perturbed_dit() -> nn.Module:
    """A tiny float64 DiT off its zero init (adaLN-zero and the zero final layer leave most gradients 0)."""
    net = tiny_dit(1).double()
    with torch.no_grad():
        for p in net.parameters():
            noise = torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype)
            p.add_(noise, alpha=0.05)
    return net


def run(out_dir, preset: str, overrides: dict, batch_per_device: int | None, **kw):
    """STEPS steps of global batch 8 with lr 1e-2 and Adam eps 1 (see the module docstring)."""
    net = perturbed_dit()
    objective = create_objective(preset, net, total_steps=STEPS, **overrides)
    opts = TrainOptions(out_dir=str(out_dir), steps=STEPS, batch_size=8, batch_per_device=batch_per_device,
                        lr=1e-2, eps=1.0, warmup_steps=0, log_every=1, checkpoint_every=100, sample_every=100,
                        ema_halflives=[2.0], quiet=True, device="cpu", **kw)
    return train(opts, net, objective, Float64Mixture())



def metrics(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def max_relative_metric_difference(a: list[dict], b: list[dict]) -> float:
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, STEPS + 1))
    return max(abs(ra[k] - rb[k]) / max(abs(rb[k]), 1e-300) for ra, rb in zip(a, b) for k in COMPARED)


@pytest.mark.parametrize("name", REGISTERED.names())
def test_every_objective_in_rounds_gives_the_full_batch_loss_metrics_and_gradient(name):
    """One step's loss, metrics and gradient in float64: 4 rounds of 2 against the batch of 8, same draws.
    Nothing in any registered objective is a batch statistic (weights, shifts, targets are per sample)."""
    nets = [perturbed_dit(), perturbed_dit()]
    objectives = [create_objective(name, net, total_steps=4) for net in nets]
    if not hasattr(objectives[0], "draw"):  # a plugin's own module: train() refuses rounds for it (tested below)
        pytest.skip(f"{name} draws inside its forward, so it trains in one round per step only")
    for objective, net in zip(objectives, nets):
        if getattr(getattr(objective, "config", None), "target_network", None) == "ema":  # shortcut: an EMA copy plays u-
            objective.set_target_network(copy.deepcopy(net))
    x, y = Float64Stream(8, 0).next()
    step = 2  # alpha 0.5 where the schedule runs from 1 to 0 over the 4 steps
    loss, full = objectives[0](x, y, step, torch.Generator().manual_seed(3))
    loss.backward()
    in_rounds, merged = forward_backward(objectives[1], objectives[1], x, y, step, torch.Generator().manual_seed(3),
                                         rounds=4, autocast=contextlib.nullcontext)
    worst_metric = max(((full[k] - merged[k]).abs() / full[k].abs().clamp(min=1e-300)).item() for k in full)
    worst_grad = max((p.grad - q.grad).abs().max().item() for p, q in zip(nets[0].parameters(), nets[1].parameters()))
    print(f"{name}: |loss diff| {(in_rounds - loss).abs().item():.1e}, max rel. metric diff {worst_metric:.1e}, "
          f"max |grad diff| {worst_grad:.1e}")
    assert set(merged) == set(full) and in_rounds.dtype == torch.float64
    assert (in_rounds - loss).abs() < 1e-12 * loss.abs() and worst_metric < 1e-12 and worst_grad < 1e-12


@pytest.mark.parametrize("name", OBJECTIVES)
def test_accumulated_steps_equal_the_full_batch_steps(name, tmp_path):
    preset, overrides = OBJECTIVES[name]
    # Two training steps: parameters, EMA and logged metrics (metrics.jsonl holds float32 values).
    full = run(tmp_path / "full", preset, overrides, None)
    rounds = run(tmp_path / "rounds", preset, overrides, 2)  # 4 rounds of 2 samples per step
    params = max_difference(rounds.net.state_dict(), full.net.state_dict())
    ema = max_difference(rounds.ema_net.state_dict(), full.ema_net.state_dict())
    logged = max_relative_metric_difference(metrics(tmp_path / "rounds"), metrics(tmp_path / "full"))
    print(f"{name}: two steps: max |param diff| {params:.1e}, max |EMA diff| {ema:.1e}, "
          f"max rel. logged metric diff {logged:.1e}")
    moved = max_difference(full.net.state_dict(), perturbed_dit().state_dict())
    assert moved > 1e-4  # the steps moved the parameters, so equal parameters mean equal gradients
    assert params < 1e-12 and ema < 1e-12 and logged < 1e-6, (params, ema, logged)
    if name == "meanflow":  # fm_ratio 0.75 of 8: 2 JVP samples, so some rounds have none (alpha_batch's merge)
        assert all(r["fm_ratio"] == 0.75 for r in metrics(tmp_path / "rounds"))


def test_two_gloo_ranks_ddp_and_fsdp_accumulate_to_the_full_batch_step(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    procs = [launch(script, tmp_path, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                    MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo") for rank in range(2)]
    for proc in procs:
        finish(proc, timeout=240)

    def final(tag: str, rank: int = 0) -> dict:
        return torch.load(tmp_path / f"{tag}-rank{rank}.pt", weights_only=True)

    for name in OBJECTIVES:
        full, rounds = f"{name}-ddp-None", f"{name}-ddp-1"  # per rank 4 samples: 4 rounds of 1
        params = max_difference(final(rounds)["net"], final(full)["net"])
        logged = max_relative_metric_difference(metrics(tmp_path / rounds), metrics(tmp_path / full))
        print(f"2 ranks, {name}: max |param diff| {params:.1e}, max rel. metric diff {logged:.1e}")
        assert params < 1e-12 and logged < 1e-6, (name, params, logged)
        for tag in (full, rounds):  # the ranks stay identical
            assert max_difference(final(tag, 0)["net"], final(tag, 1)["net"]) == 0.0
    # One gradient synchronisation per bucket (DDP) or unit (FSDP2) per step, rounds or not.
    syncs = json.loads((tmp_path / "syncs-rank0.json").read_text())
    print("gradient synchronisations in 2 steps:", syncs)
    for name, parallel in [*((name, "ddp") for name in OBJECTIVES), ("meanflow", "fsdp")]:
        assert syncs[f"{name}-{parallel}-1"] == syncs[f"{name}-{parallel}-None"] > 0, syncs
    fsdp = max_difference(final("meanflow-fsdp-1")["net"], final("meanflow-fsdp-None")["net"])
    fsdp_vs_ddp = max_difference(final("meanflow-fsdp-1")["net"], final("meanflow-ddp-None")["net"])
    logged = max_relative_metric_difference(metrics(tmp_path / "meanflow-fsdp-1"), metrics(tmp_path / "meanflow-ddp-None"))
    print(f"2 ranks FSDP2, meanflow: max |param diff| {fsdp:.1e} (vs DDP without rounds {fsdp_vs_ddp:.1e}), "
          f"max rel. metric diff vs DDP {logged:.1e}")
    assert fsdp < 1e-12 and fsdp_vs_ddp < 1e-12 and logged < 1e-6


def test_resume_in_the_middle_of_a_run_with_rounds_is_bit_exact(tmp_path):
    """8 steps straight == 5 steps, then the same call with steps=8, both in rounds of 2 (4 per step)."""

    def go(out, steps, init_seed):
        net = tiny_mlp(init_seed)
        objective = create_objective("alphaflow", net, total_steps=8, shift=CFG)  # alpha 1 -> 0: every branch
        opts = TrainOptions(out_dir=str(tmp_path / out), steps=steps, batch_size=8, batch_per_device=2,
                            warmup_steps=2, log_every=1, checkpoint_every=3, sample_every=100,
                            ema_halflives=[10.0], quiet=True, device="cpu")
        return train(opts, net, objective, MixtureStream(8, opts.seed))

    straight = go("a", 8, 0)
    go("b", 5, 0)
    resumed = go("b", 8, 1)  # another init: everything must come from the checkpoint
    for a, b in zip(straight.net.parameters(), resumed.net.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema_net.parameters(), resumed.ema_net.parameters()):
        assert torch.equal(a, b)
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "latest.pt")["options"]["batch_per_device"] == 2
    timeless = lambda rows: [{k: v for k, v in r.items() if k not in ("steps_per_s", "wall_time")} for r in rows]  # noqa: E731
    assert timeless(metrics(tmp_path / "a")) == timeless(metrics(tmp_path / "b"))


def test_a_bad_batch_per_device_is_one_sentence():
    with pytest.raises(ValueError, match="batch_per_device must be a positive divisor"):
        TrainOptions(batch_size=8, batch_per_device=3)
    with pytest.raises(ValueError, match="batch_per_device must be a positive divisor"):
        TrainOptions(batch_size=8, batch_per_device=0)
    opts = TrainOptions(batch_size=8, batch_per_device=8)
    assert opts.per_rank(1) == (8, 1) and TrainOptions(batch_size=8, batch_per_device=2).per_rank(2) == (4, 2)
    with pytest.raises(ValueError, match=r"does not divide the per-rank batch 4 .* pick one of 1, 2, 4, or null"):
        opts.per_rank(2)

    class NoDraws(nn.Module):  # a wrapper objective whose forward draws its own randomness
        def forward(self, x, y, step, generator):
            return x.sum(), {}

    with pytest.raises(ValueError, match="set batch_per_device to null"):
        check_objective(NoDraws())
    check_objective(create_objective("meanflow", tiny_mlp()))


@pytest.mark.parametrize("world, value, phrase", [("1", "3", "batch_per_device must be a positive divisor"),
                                                  ("2", "8", "does not divide the per-rank batch 4")])
def test_the_cli_refuses_a_bad_batch_per_device_before_writing_the_run(world, value, phrase, tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", world)  # as torchrun sets it; checked before the process group exists
    monkeypatch.setattr(sys, "argv", ["flowzoo", "run", "--batch-size", "8", "--steps", "1", "--out", str(tmp_path / "x"),
                                      "--set", f"train.batch_per_device={value}"])
    with pytest.raises(SystemExit) as exit:
        main()
    err = capsys.readouterr().err
    assert exit.value.code == 2 and phrase in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
