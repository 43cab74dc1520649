"""Exponential moving averages of the network weights, with EDM2's halflife parameterisation.

EDM2 (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models") states
the EMA length as a halflife and ramps it up early in training:

    halflife_eff = min(halflife, rampup_ratio * step)          (rampup_ratio = None: no ramp)
    beta         = 0.5 ** (1 / halflife_eff)                   per step
    ema          <- beta * ema + (1 - beta) * net

Halflives are in optimizer steps here (EDM2 counts images; divide by the batch size to convert). At
step 0 the halflife is 0 and beta = 0: the EMA starts as a copy of the network. The published
6931-step halflife is beta = 0.9999.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(halflife: float, step: int, rampup_ratio: float | None = 0.05) -> float:
    """The decay for the update that follows ``step`` completed optimizer steps."""
    if rampup_ratio is not None:
        halflife = min(halflife, rampup_ratio * step)
    return 0.5 ** (1.0 / max(halflife, 1e-8))


class EMA:
    """One averaged copy of a network; ``net`` is a frozen module in eval mode (a valid target network)."""

    def __init__(self, net: nn.Module, halflife: float, rampup_ratio: float | None = 0.05):
        self.halflife = float(halflife)
        self.rampup_ratio = rampup_ratio
        self.net = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> float:
        """Average ``net`` in, where ``step`` counts the optimizer steps taken so far (this one included)."""
        beta = ema_beta(self.halflife, step, self.rampup_ratio)
        src = dict(net.named_parameters())
        for name, p_ema in self.net.named_parameters():
            p_ema.lerp_(src[name].detach(), 1.0 - beta)
        # Buffers (e.g. running statistics) are copied, not averaged, as in EDM2.
        src_buffers = dict(net.named_buffers())
        for name, b_ema in self.net.named_buffers():
            b_ema.copy_(src_buffers[name])
        return beta

    def state_dict(self) -> dict:
        return {"halflife": self.halflife, "rampup_ratio": self.rampup_ratio, "net": self.net.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if float(state["halflife"]) != self.halflife:
            raise ValueError(
                f"the checkpoint's EMA has halflife {state['halflife']} but this run asks for {self.halflife}; "
                f"keep ema_halflives as in the original run."
            )
        self.net.load_state_dict(state["net"])
