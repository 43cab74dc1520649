"""Training compute of a run, so that "equal compute" can be read as equal network passes or equal FLOPs.

Equal optimizer steps at equal batch size (the suites' `compare_at: steps`) is not equal work: a MeanFlow
step adds a JVP for its r < t samples, alpha-Flow a second forward for its two-point samples, Shortcut and
CFG extra target calls. The counts here are *measured*, not derived from a formula: the run's objective,
built from its config, trains a few steps around a stand-in network that counts the samples passing
through it, split by how it is called:

- forward: network evaluations without a graph to the parameters (targets, shift velocities, CFG) plus
  the prediction itself; a finite-difference JVP shows up here as its two forwards, which is what it costs;
- jvp: evaluations under forward-mode AD (torch.func.jvp or dual tensors), or the grad-enabled call of
  the double-backward backend beyond the one prediction;
- backward: the backward pass of the loss (one per step).

All in units of one batch per training step, averaged over points spread across the run (schedules such
as alpha-Flow's sigmoid move samples between branches). FLOPs use the real backbone's forward FLOPs per
sample (torch.utils.flop_counter) and the usual estimates backward = 2 forward, JVP = 2 forward (primal
plus tangent through the matmuls that dominate). They are estimates; the pass counts are exact up to
the sampling of times and schedules at the measured points.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

BACKWARD_COST = 2.0  # FLOPs of a backward pass in forwards
JVP_COST = 2.0  # FLOPs of a forward-mode JVP (primal + tangent) in forwards


def _under_jvp(z: Tensor) -> bool:
    if torch._C._functorch.is_functorch_wrapped_tensor(z):
        return True
    return fwAD.unpack_dual(z).tangent is not None


class PassCountingNet(nn.Module):
    """A small net(z, t, h, y) that counts the samples of each kind of call it receives."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.sample_shape = (dim,)
        self.inp = nn.Linear(dim + 2, 16)
        self.label = nn.Embedding(num_classes + 1, 16)
        self.out = nn.Linear(16, dim)
        self.counts: Counter = Counter()

    def forward(self, z: Tensor, t: Tensor, h: Tensor, y: Tensor | None = None) -> Tensor:
        n = int(z.shape[0])
        if _under_jvp(z):
            self.counts["jvp"] += n
        elif torch.is_grad_enabled():
            self.counts["grad_forward"] += n
        else:
            self.counts["forward"] += n
        if y is None:
            y = torch.full((n,), self.num_classes, dtype=torch.long)
        a = torch.tanh(self.inp(torch.cat([z, t[:, None], h[:, None]], dim=1)) + self.label(y))
        return self.out(a)


def passes_per_step(objective_name: str, objective_spec: dict[str, Any], total_steps: int, *,
                    num_classes: int = 10, points: int = 16, batch: int = 512, seed: int = 0) -> dict[str, float]:
    """{"forward", "jvp", "backward"}: network passes per training step, in batches, averaged over the run."""
    from flowzoo.objectives import create_objective

    dim = 2
    net = PassCountingNet(dim, num_classes)
    objective = create_objective(objective_name, net, total_steps=total_steps, **objective_spec)
    if hasattr(objective, "set_target_network"):
        objective.set_target_network(net)  # an EMA target is a copy of the net: its calls count the same
    gen = torch.Generator().manual_seed(seed)
    steps = sorted({round(i * (total_steps - 1) / max(points - 1, 1)) for i in range(points)})
    backward = 0
    for step in steps:
        x = torch.randn(batch, dim, generator=gen)
        y = torch.randint(0, num_classes, (batch,), generator=gen)
        loss, _ = objective(x, y, step, torch.Generator().manual_seed(seed * 100_003 + step))
        net.zero_grad(set_to_none=True)
        loss.backward()
        backward += 1
    samples = batch * len(steps)
    c = net.counts
    # The prediction is the one grad-enabled call of the batch; any more (double-backward JVP) is JVP work.
    grad_extra = max(c["grad_forward"] - samples, 0)
    prediction = c["grad_forward"] - grad_extra
    return {
        "forward": round((prediction + c["forward"]) / samples, 4),
        "jvp": round((c["jvp"] + grad_extra) / samples, 4),
        "backward": round(backward / len(steps), 4),
    }


def forward_flops_per_sample(net: nn.Module, sample_shape: tuple[int, ...], num_classes: int) -> float:
    """FLOPs of one network forward for one sample (torch.utils.flop_counter counts matmuls and convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    n = 2
    device = next(net.parameters()).device
    z = torch.zeros(n, *sample_shape, device=device)
    t = torch.full((n,), 0.5, device=device)
    y = torch.zeros(n, dtype=torch.long, device=device) if num_classes else None
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(z, t, torch.zeros_like(t), y)
    return counter.get_total_flops() / n


def train_flops(passes: dict[str, float], forward_flops: float, batch: int, steps: int) -> float:
    """FLOPs of a training run: per sample and step, the passes weighted by their cost in forwards."""
    per_sample_step = forward_flops * (passes["forward"] + BACKWARD_COST * passes["backward"] + JVP_COST * passes["jvp"])
    return float(per_sample_step * batch * steps)


def training_compute(cfg: dict[str, Any]) -> dict[str, Any]:
    """passes_per_step, forward_flops_per_sample and train_flops for a resolved run config."""
    from flowzoo.data import dataset_from_config
    from flowzoo.pipeline.run import build_network

    spec = dict(cfg["objective"])
    name = spec.pop("name")
    steps = int(cfg["train"]["steps"])
    batch = int(cfg["train"]["batch_size"])
    dataset = dataset_from_config(cfg["data"])
    num_classes = int(getattr(dataset, "num_classes", 0) or 0)
    passes = passes_per_step(name, spec, steps, num_classes=max(num_classes, 1))
    net = build_network(cfg["backbone"], dataset, int(cfg.get("seed", 0)))
    flops = forward_flops_per_sample(net, tuple(dataset.sample_shape), num_classes)
    return {
        "passes_per_step": passes,
        "forward_flops_per_sample": flops,
        "train_flops": train_flops(passes, flops, batch, steps),
        "flops_estimate": f"backward = {BACKWARD_COST:g} forwards, JVP = {JVP_COST:g} forwards",
    }
