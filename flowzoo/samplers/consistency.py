"""Multistep consistency sampling (Song et al., "Consistency Models", ICML 2023, Algorithm 1).

The consistency function in flowzoo's average-velocity parameterisation is the jump to t = 0:
    x0_hat = f(z_t, t) = z_t - t u(z_t, 0, t)
Each step predicts x0_hat, then re-noises it along the path to the next grid time with fresh
Gaussian noise, z = (1 - t_next) x0_hat + t_next e, and the last x0_hat is returned. One step on
[1, 0] equals the 1-step MeanFlow sample; more steps trade determinism for error correction.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from flowzoo.registry import SAMPLERS
from flowzoo.samplers.common import as_times, fresh_noise, guided_velocity


@SAMPLERS.register("consistency")
@torch.no_grad()
def sample_consistency(
    model: nn.Module,
    noise: Tensor,
    times: Sequence[float] | Tensor,
    cond: Tensor | None = None,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Predict x0, re-noise to the next time, repeat; NFE = len(times) - 1."""
    grid = as_times(times)
    z = noise
    x0_hat = noise
    for t, t_next in zip(grid[:-1], grid[1:]):
        x0_hat = z - t * guided_velocity(model, z, 0.0, t, cond, guidance)
        if t_next > 0:
            z = (1 - t_next) * x0_hat + t_next * fresh_noise(x0_hat, generator)
    return x0_hat


sample_consistency.default_nfe = 1
