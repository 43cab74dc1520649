"""Euler ODE solver on the instantaneous velocity (flow matching; Lipman et al. 2023, Liu et al. 2023).

dz/dt = v(z, t) = u(z, t, t) (h = 0), integrated from t = 1 to 0:
    z_{t_next} = z_t - (t - t_next) u(z_t, t, t)
For a straight path (a single data point) one step is exact. NFE = len(times) - 1.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from flowzoo.registry import SAMPLERS
from flowzoo.samplers.common import as_times, guided_velocity


@SAMPLERS.register("euler")
@torch.no_grad()
def sample_euler(
    model: nn.Module,
    noise: Tensor,
    times: Sequence[float] | Tensor,
    cond: Tensor | None = None,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,  # unused: deterministic ODE
) -> Tensor:
    """First-order ODE steps with the instantaneous velocity."""
    grid = as_times(times)
    z = noise
    for t, t_next in zip(grid[:-1], grid[1:]):
        z = z - (t - t_next) * guided_velocity(model, z, t, t, cond, guidance)
    return z


sample_euler.default_nfe = 50
