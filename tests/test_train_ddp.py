"""Two processes on gloo (CPU), launched the way torchrun launches them (RANK / WORLD_SIZE / LOCAL_RANK).

1. ``train()`` under the world of two: it joins and leaves the process group itself, shards the global
   batch, keeps the ranks' parameters identical, and only rank 0 writes metrics and checkpoints.
2. DDP around the objective: each rank computes the loss of its half of a fixed batch with fixed
   randomness; the synchronised gradient equals the single-process gradient of the whole batch, for
   flow_matching and for meanflow (whose forward includes the JVP target).
"""

from __future__ import annotations

import json

import torch

from flowzoo.train import load_checkpoint
from test_train_support import finish, free_port, launch

WORKER = '''
import copy, json, os, sys
import torch
torch.set_num_threads(1)
import torch.distributed as dist
from torch import nn
from flowzoo.objectives import create_objective
from flowzoo.objectives.unified import DrawnBatch
from flowzoo.train import TrainOptions, distributed, train
from test_train_support import MixtureDataset, tiny_dit

out_dir, second_port = sys.argv[1], sys.argv[2]
rank = int(os.environ["RANK"])

# 1. The loop on a world of two: the global batch of 8 is 4 per rank, each rank with its own data seed.
net = tiny_dit(0)
opts = TrainOptions(out_dir=os.path.join(out_dir, "run"), steps=3, batch_size=8, warmup_steps=0, log_every=1,
                    checkpoint_every=2, sample_every=100, ema_halflives=[5.0], quiet=True, device="cpu")
seen = []
state = train(opts, net, create_objective("meanflow", net), MixtureDataset(),
              hooks=[lambda step, s: seen.append((step, s.rank, s.world_size))])
assert not dist.is_initialized(), "train() must destroy the process group it created"
torch.save({"net": net.state_dict(), "ema": state.ema_net.state_dict(), "hooks": seen},
           os.path.join(out_dir, f"rank{rank}.pt"))

# 2. Gradient equality, in a new process group.
os.environ["MASTER_PORT"] = second_port
env = distributed.setup("cpu")


class HalfBatchLoss(nn.Module):
    """DDP's forward must be what calls the network: this forward calls objective.loss."""

    def __init__(self, objective):
        super().__init__()
        self.objective = objective

    def forward(self, x, drawn, step):
        return self.objective.loss(x, drawn, step)[0]


results = {}
for name in ("flow_matching", "meanflow"):
    net = tiny_dit(1)
    with torch.no_grad():  # off the zero init, so every parameter and the JVP matter
        for p in net.parameters():
            p.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(p.numel()))
    reference_net = copy.deepcopy(net)
    objective = create_objective(name, net)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
    drawn = objective.draw(x, y, 0, torch.Generator().manual_seed(7))

    reference = create_objective(name, reference_net)
    reference.loss(x, drawn, 0)[0].backward()

    half = slice(4 * rank, 4 * rank + 4)
    mine = DrawnBatch(drawn.noise[half], drawn.t[half], drawn.r[half], drawn.labels[half], drawn.dropped[half])
    ddp = distributed.wrap_objective(HalfBatchLoss(objective), env)
    ddp(x[half], mine, 0).backward()
    worst = 0.0
    for (key, p), q in zip(net.named_parameters(), reference_net.parameters()):
        assert p.grad is not None, f"{key} got no gradient under DDP"
        worst = max(worst, ((p.grad - q.grad).abs().max() / q.grad.abs().max().clamp(min=1e-12)).item())
    results[name] = {"max_rel_err": worst, "jvp_samples": int((drawn.r < drawn.t).sum()),
                     "grad_norm": torch.cat([q.grad.flatten() for q in reference_net.parameters()]).norm().item()}
    del ddp
if rank == 0:
    with open(os.path.join(out_dir, "grads.json"), "w") as f:
        json.dump(results, f)
distributed.teardown(env)
'''


def test_two_gloo_ranks_train_and_match_single_process_gradients(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    first, second = free_port(), free_port()
    procs = [
        launch(script, tmp_path, second, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(first), GLOO_SOCKET_IFNAME="lo")
        for rank in range(2)
    ]
    for proc in procs:
        finish(proc, timeout=180)

    # The loop: ranks stay identical; one writer; per-rank data positions checkpointed.
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    for key in r0["net"]:
        assert torch.equal(r0["net"][key], r1["net"][key]), key
        assert torch.equal(r0["ema"][key], r1["ema"][key]), key
    assert r0["hooks"] == [(3, 0, 2)] and r1["hooks"] == [(3, 1, 2)]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3] and lines[-1]["images_seen"] == 24
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 3
    seeds = [s["data"]["seed"] for s in ckpt["ranks"]]
    assert len(set(seeds)) == 2  # each rank drew its own batches
    assert all(s["data"]["position"] == 3 for s in ckpt["ranks"])

    grads = json.loads((tmp_path / "grads.json").read_text())
    assert grads["meanflow"]["jvp_samples"] == 2  # fm_ratio 0.75 of 8: the JVP branch ran
    for name, result in grads.items():
        assert result["grad_norm"] > 0
        assert result["max_rel_err"] < 1e-5, (name, result)
