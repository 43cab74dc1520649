"""Heun's 2nd-order ODE solver on the instantaneous velocity (Karras et al., "Elucidating the Design
Space of Diffusion-Based Generative Models" (EDM), NeurIPS 2022, Algorithm 1, deterministic part).

Per step, with d = u(z_t, t, t):
    z' = z_t - (t - t_next) d                                   (Euler predictor)
    z_{t_next} = z_t - (t - t_next) (d + u(z', t_next, t_next)) / 2   (trapezoidal corrector)
The step that lands on t = 0 keeps the Euler predictor, as in EDM. NFE = 2 (len(times) - 1) - 1
when the grid ends at 0.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from flowzoo.registry import SAMPLERS
from flowzoo.samplers.common import as_times, guided_velocity


@SAMPLERS.register("heun")
@torch.no_grad()
def sample_heun(
    model: nn.Module,
    noise: Tensor,
    times: Sequence[float] | Tensor,
    cond: Tensor | None = None,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,  # unused: deterministic ODE
) -> Tensor:
    """Second-order (trapezoidal) ODE steps; Euler on the final step to t = 0."""
    grid = as_times(times)
    z = noise
    for t, t_next in zip(grid[:-1], grid[1:]):
        d = guided_velocity(model, z, t, t, cond, guidance)
        z_euler = z - (t - t_next) * d
        if t_next == 0:
            z = z_euler
        else:
            d_next = guided_velocity(model, z_euler, t_next, t_next, cond, guidance)
            z = z - (t - t_next) * 0.5 * (d + d_next)
    return z


sample_heun.default_nfe = 35  # EDM's 18-step grid
# Largest number of steps whose NFE (2 per step, 1 on the last) fits a budget of nfe evaluations.
sample_heun.steps_for_nfe = lambda nfe: max(1, (nfe + 1) // 2)
