"""Average-velocity (MeanFlow) sampler: z_r = z_t - (t - r) u(z_t, r, t) over a grid.

Implements the 1-step / multi-step sampling of MeanFlow (Geng et al., "Mean Flows for One-step
Generative Modeling", 2025, Algorithm 2): with grid [1, 0] it is one network evaluation,
x = e - u(e, 0, 1); on a longer grid each jump covers [t_{i+1}, t_i]. Also the sampler of Shortcut
models (Frans et al. 2024) and alpha-Flow, whose networks predict the same average velocity.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from flowzoo.registry import SAMPLERS
from flowzoo.samplers.common import as_times, guided_velocity


@SAMPLERS.register("meanflow")
@torch.no_grad()
def sample_meanflow(
    model: nn.Module,
    noise: Tensor,
    times: Sequence[float] | Tensor,
    cond: Tensor | None = None,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,  # unused: the chain is deterministic given the noise
) -> Tensor:
    """Deterministic chain of average-velocity jumps; NFE = len(times) - 1."""
    grid = as_times(times)
    z = noise
    for t, r in zip(grid[:-1], grid[1:]):
        z = z - (t - r) * guided_velocity(model, z, r, t, cond, guidance)
    return z


sample_meanflow.default_nfe = 1
