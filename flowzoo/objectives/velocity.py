"""The average-velocity callable u(z, r, t) that the objective's math is written against.

A backbone takes (z, t, h, y) with h = t - r (DESIGN.md §1). The math only needs u(z, r, t), so the
class labels are bound here. ``subset(index)`` restricts the bound labels to some samples, which lets
``alpha_target`` call the network on just the samples of one branch (e.g. 25% of a MeanFlow batch
takes the JVP) instead of the whole batch.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

VelocityFn = Callable[[Tensor, Tensor, Tensor], Tensor]


class ConditionedVelocity:
    """u(z, r, t) = net(z, t, t - r, labels): a backbone with its class labels bound."""

    def __init__(self, net: nn.Module, labels: Tensor | None):
        self.net = net
        self.labels = labels

    def __call__(self, z: Tensor, r: Tensor, t: Tensor) -> Tensor:
        return self.net(z, t, t - r, self.labels)

    def subset(self, index: Tensor) -> "ConditionedVelocity":
        labels = None if self.labels is None else self.labels[index]
        return ConditionedVelocity(self.net, labels)


def restrict(u: VelocityFn, index: Tensor, batch_size: int, z_full: Tensor) -> VelocityFn:
    """u evaluated on the samples ``index`` of a batch of ``batch_size``.

    Callables with ``subset`` (ConditionedVelocity) are cut down directly. Any other callable is
    treated as per-sample (what every network is) and evaluated on the full batch with the chosen
    samples scattered into ``z_full``; the scatter is differentiable in both modes, so JVPs work too.
    """
    if index.numel() == batch_size:
        return u
    if hasattr(u, "subset"):
        return u.subset(index)

    def scattered(z: Tensor, r: Tensor, t: Tensor) -> Tensor:
        zf = z_full.detach().clone().to(z.dtype).index_put((index,), z)
        rf = torch.zeros(batch_size, dtype=r.dtype, device=r.device).index_put((index,), r)
        tf = torch.ones(batch_size, dtype=t.dtype, device=t.device).index_put((index,), t)
        return u(zf, rf, tf)[index]

    return scattered
