"""train.parallel=fsdp (FSDP2, torch.distributed.fsdp.fully_shard) on two gloo processes (CPU).

Two processes launched the way torchrun launches them run, in one process group, the same tiny runs
(DiT-tiny/2 on 8x8 mixtures, global batch 8 = 4 per rank, 4 steps, an EMA, gradient clipping that is
active) under DDP and under FSDP2:

(a) FSDP2 ends with DDP's parameters, EMA and logged losses / gradient norms (float round-off apart) for
    meanflow (its JVP target runs through FSDP2's hooks, forward-mode dual tensors) and alphaflow with CFG
    trained in over a narrow t interval (its alpha goes 1 -> two-point -> 0 over the 4 steps, and the ranks
    make different numbers of guided calls); the two ranks hold the same full copies;
(b) an FSDP2 run stopped right after its first checkpoint (step 2) and run again ends bit for bit where
    the uninterrupted FSDP2 run ends (parameters, EMA, Adam state in latest.pt);
(c) the FSDP2 checkpoint is the file a DDP run writes (same keys, index-keyed Adam state) and loads on one
    process through flowzoo sample's loader (pipeline/sample.py load_run);
(d) train.parallel=bogus, and fsdp with what it cannot run, are refused in one sentence.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from flowzoo.objectives import create_objective
from flowzoo.train import TrainOptions, load_checkpoint, train
from test_train_support import MixtureDataset, finish, free_port, launch, tiny_dit

STEPS = 4

WORKER = '''
import faulthandler, os, sys
faulthandler.dump_traceback_later(200, exit=True)  # a hang (ranks waiting on different collectives) shows where
import torch
torch.set_num_threads(1)
import torch.distributed as dist
from flowzoo.objectives import create_objective
from flowzoo.train import TrainOptions, train
from test_train_support import MixtureDataset, tiny_dit

out_dir = sys.argv[1]
rank = int(os.environ["RANK"])
dist.init_process_group("gloo")  # train() joins this group and leaves it standing


class Stop(Exception):
    pass


def stop_after_first_checkpoint(step, state):
    assert state.last_checkpoint_step == step == 2
    raise Stop  # both ranks, after the step-2 checkpoint is on disk: the run dies there


def run(name, objective_name, parallel, hooks=(), sample_every=100):
    net = tiny_dit(0)
    calls = []  # network calls of this rank per step (their number depends on its share of the batch)
    net.register_forward_pre_hook(lambda module, args: calls.__setitem__(-1, calls[-1] + 1))
    # alphaflow trains CFG in with a narrow interval: the guided calls run only where this rank's t fall inside
    # it, so the two ranks make different numbers of network calls per step.
    extra = {"shift": {"name": "cfg", "omega": 0.5, "kappa": 0.2, "t_min": 0.45, "t_max": 0.55}} if objective_name == "alphaflow" else {}
    objective = create_objective(objective_name, net, total_steps=STEPS, **extra)
    objective.register_forward_pre_hook(lambda module, args: calls.append(0))  # a new step
    opts = TrainOptions(out_dir=os.path.join(out_dir, name), steps=STEPS, batch_size=8, lr=1e-3, warmup_steps=0,
                        grad_clip=0.05, log_every=1, checkpoint_every=2, keep_last=2, sample_every=sample_every,
                        ema_halflives=[3.0], quiet=True, device="cpu", parallel=parallel)
    state = train(opts, net, objective, MixtureDataset(), hooks=hooks)
    torch.save({"net": state.net.state_dict(), "ema": state.ema_net.state_dict(), "sharded": state.net is not net,
                "calls": calls},
               os.path.join(out_dir, f"{name}-rank{rank}.pt"))


for objective_name in ("meanflow", "alphaflow"):
    run(f"{objective_name}-ddp", objective_name, "ddp")
    run(f"{objective_name}-fsdp", objective_name, "fsdp")
try:
    run("alphaflow-resumed", "alphaflow", "fsdp", hooks=[stop_after_first_checkpoint], sample_every=2)
    raise AssertionError("the hook should have stopped the run")
except Stop:
    pass
dist.barrier()  # the rerun starts once the stopped run has ended on every rank (rank 0 was writing latest.pt)
run("alphaflow-resumed", "alphaflow", "fsdp")  # the same call again: resumes from latest.pt (step 2)
dist.destroy_process_group()
'''.replace("STEPS", str(STEPS))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    script = out / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    procs = [launch(script, out, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo") for rank in range(2)]
    outputs = [finish(proc, timeout=240) for proc in procs]
    return out, outputs


def result(out, name, rank=0):
    return torch.load(out / f"{name}-rank{rank}.pt", weights_only=True)


def metrics(out, name):
    return [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("objective_name", ["meanflow", "alphaflow"])
def test_fsdp_trains_like_ddp(runs, objective_name):
    out, _ = runs
    ddp, fsdp = result(out, f"{objective_name}-ddp"), result(out, f"{objective_name}-fsdp")
    assert fsdp["sharded"] and not ddp["sharded"]  # state.net is the plain copy of the sharded network
    other = result(out, f"{objective_name}-fsdp", rank=1)
    if objective_name == "alphaflow":
        # The ranks made different numbers of network calls (guided calls only where a rank's t fall in the CFG
        # interval): the case where FSDP2's default per-call all-gathers and prefetches leave the ranks waiting.
        assert fsdp["calls"] != other["calls"], (fsdp["calls"], other["calls"])  # calls per step, per rank
    for key in fsdp["net"]:
        assert torch.equal(fsdp["net"][key], other["net"][key]), key  # the ranks hold the same full weights
        assert torch.equal(fsdp["ema"][key], other["ema"][key]), key
    assert fsdp["net"].keys() == ddp["net"].keys() and fsdp["ema"].keys() == ddp["ema"].keys()
    moved = 0.0
    start = tiny_dit(0).state_dict()
    for key in ddp["net"]:
        torch.testing.assert_close(fsdp["net"][key], ddp["net"][key], rtol=1e-5, atol=1e-6, msg=key)
        torch.testing.assert_close(fsdp["ema"][key], ddp["ema"][key], rtol=1e-5, atol=1e-6, msg=key)
        moved = max(moved, (ddp["net"][key] - start[key]).abs().max().item())
    assert moved > 1e-3  # four Adam steps at lr 1e-3 moved the weights well past the tolerance

    m_ddp, m_fsdp = metrics(out, f"{objective_name}-ddp"), metrics(out, f"{objective_name}-fsdp")
    assert [r["step"] for r in m_fsdp] == [1, 2, 3, 4]
    for a, b in zip(m_ddp, m_fsdp):
        for key in ("loss", "grad_norm", "alpha"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), (key, a["step"])
    assert max(r["grad_norm"] for r in m_fsdp) > 0.05  # the clipping (grad_clip 0.05) was active
    if objective_name == "alphaflow":  # the curriculum reached the two-point (0 < alpha < 1) and JVP targets
        assert any(0 < r["alpha"] < 1 for r in m_fsdp) and m_fsdp[-1]["alpha"] == 0


def test_fsdp_resume_after_the_first_checkpoint_is_exact(runs):
    out, _ = runs
    resumed, whole = result(out, "alphaflow-resumed"), result(out, "alphaflow-fsdp")
    for key in whole["net"]:
        assert torch.equal(resumed["net"][key], whole["net"][key]), key
        assert torch.equal(resumed["ema"][key], whole["ema"][key]), key
    a = load_checkpoint(out / "alphaflow-resumed" / "checkpoints" / "latest.pt")
    b = load_checkpoint(out / "alphaflow-fsdp" / "checkpoints" / "latest.pt")
    assert a["step"] == b["step"] == STEPS
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for i, moments in b["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(a["optimizer"]["state"][i][name], value), (i, name)
    assert [r["step"] for r in metrics(out, "alphaflow-resumed")] == [1, 2, 3, 4]  # steps 3-4 appended once


def test_fsdp_checkpoint_is_the_ddp_file_and_loads_on_one_process(runs):
    from flowzoo.pipeline.sample import load_run

    out, _ = runs
    fsdp = load_checkpoint(out / "alphaflow-fsdp" / "checkpoints" / "latest.pt")
    ddp = load_checkpoint(out / "alphaflow-ddp" / "checkpoints" / "latest.pt")
    assert fsdp.keys() == ddp.keys() and fsdp["world_size"] == 2 and fsdp["options"]["parallel"] == "fsdp"
    assert fsdp["model"].keys() == ddp["model"].keys()
    assert all(fsdp["model"][k].shape == ddp["model"][k].shape for k in ddp["model"])
    assert [g["params"] for g in fsdp["optimizer"]["param_groups"]] == [g["params"] for g in ddp["optimizer"]["param_groups"]]
    for i, moments in ddp["optimizer"]["state"].items():
        assert {n: v.shape for n, v in fsdp["optimizer"]["state"][i].items()} == {n: v.shape for n, v in moments.items()}
        assert not any(type(v) is not torch.Tensor for v in fsdp["optimizer"]["state"][i].values())  # no DTensor

    # The run directory as `flowzoo run` leaves it: digits is 1x8x8 with 10 classes, so this builds tiny_dit's net.
    run_dir = out / "alphaflow-fsdp"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"data": {"name": "digits"}, "backbone": {"name": "DiT-tiny/2"}, "seed": 0, "objective": {"name": "alphaflow"}}))
    final = result(out, "alphaflow-fsdp")
    for ema_index, expected in ((0, final["ema"]), (-1, final["net"])):
        net, _, _, _ = load_run(run_dir / "checkpoints" / "latest.pt", ema_index=ema_index)
        for key, value in net.state_dict().items():
            assert torch.equal(value, expected[key]), key
    z = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.isfinite(net(z, torch.ones(2), torch.ones(2), torch.tensor([1, 10]))).all()


def one_sentence(message: str) -> bool:
    return "\n" not in message.strip() and message.strip().endswith(".") and message.count(". ") == 0


def test_unknown_parallel_is_refused_in_one_sentence(tmp_path, capsys):
    from test_cli import flowzoo

    with pytest.raises(ValueError, match="parallel must be one of ddp, fsdp") as info:
        TrainOptions(parallel="bogus")
    assert one_sentence(str(info.value))
    code, _, err = flowzoo("run", "--objective", "flow_matching", "--steps", "2", "--out", str(tmp_path / "bogus"),
                           "--set", "train.parallel=bogus", "--quiet", capsys=capsys)
    assert code == 2 and "parallel must be one of ddp, fsdp (got 'bogus')" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("refused, match", [({"jvp": "double_backward"}, "double_backward"), ({}, "compile")])
def test_fsdp_refuses_what_it_cannot_run(tmp_path, refused, match):
    net = tiny_dit(0)
    objective = create_objective("meanflow", net, **refused)
    opts = TrainOptions(out_dir=str(tmp_path), steps=1, batch_size=2, quiet=True, device="cpu", parallel="fsdp",
                        compile=not refused)
    with pytest.raises(ValueError, match=match) as info:
        train(opts, net, objective, MixtureDataset())
    assert one_sentence(str(info.value)) and str(info.value).startswith("train.parallel=fsdp cannot")
    assert not (tmp_path / "checkpoints").exists()  # refused before anything ran
