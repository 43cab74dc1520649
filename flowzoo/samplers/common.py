"""Pieces every sampler shares: time-grid checks, the guided velocity call, fresh noise.

Sampler contract (one signature for all, as in k-diffusion):
    fn(model, noise, times, cond=None, guidance=1.0, generator=None) -> x
``model(z, t, h, y)`` is a backbone returning the average velocity u(z, r, t) with h = t - r.
A sampler that draws noise along the way takes it from ``fresh_noise(like, generator)``: evaluation passes
a per-sample ``SampleNoise`` there (flowzoo.samplers.noise), so its samples depend only on (seed, index).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from flowzoo.samplers.noise import SampleNoise


def as_times(times: Sequence[float] | Tensor) -> list[float]:
    """A descending grid in [0, 1] as Python floats; a clear error for anything else."""
    grid = [float(t) for t in (times.reshape(-1).tolist() if isinstance(times, Tensor) else times)]
    if len(grid) < 2:
        raise ValueError(f"a time grid needs at least two points (start and end), got {grid}.")
    if any(not 0.0 <= t <= 1.0 for t in grid):
        raise ValueError(f"times must lie in [0, 1] (t = 1 is noise, t = 0 is data), got {grid}.")
    if any(a <= b for a, b in zip(grid, grid[1:])):
        raise ValueError(f"times must be strictly descending, e.g. [1, 0.5, 0], got {grid}.")
    return grid


def guided_velocity(
    model: nn.Module, z: Tensor, r: float, t: float, cond: Tensor | None, guidance: float
) -> Tensor:
    """u(z, r, t), with classifier-free guidance u = u_null + w (u_cond - u_null) (Ho & Salimans 2022).

    Guidance applies only when w != 1 and labels are given; both branches share one batched call.
    The null label is ``model.num_classes``.
    """
    batch = z.shape[0]
    # Times at least in float32 even for half-precision z: bf16 cannot tell 0.996 from 1.
    dtype = torch.promote_types(z.dtype, torch.float32)
    t_vec = torch.full((batch,), t, device=z.device, dtype=dtype)
    h_vec = torch.full((batch,), t - r, device=z.device, dtype=dtype)
    if cond is None or guidance == 1.0:
        return model(z, t_vec, h_vec, cond)
    null = torch.full_like(cond, model.num_classes)
    u_cond, u_null = model(
        torch.cat([z, z]), torch.cat([t_vec, t_vec]), torch.cat([h_vec, h_vec]), torch.cat([cond, null])
    ).chunk(2)
    return u_null + guidance * (u_cond - u_null)


def fresh_noise(like: Tensor, generator: "torch.Generator | SampleNoise | None") -> Tensor:
    """e ~ N(0, I) shaped like ``like``: each sample's own next draw when ``generator`` is a SampleNoise (what
    evaluation passes, so samples do not depend on the batch), else drawn from the torch generator."""
    if isinstance(generator, SampleNoise):
        return generator.next_like(like)
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
