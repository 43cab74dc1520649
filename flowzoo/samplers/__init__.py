"""Samplers: turn noise at t = 1 into data at t = 0 with a trained average-velocity network.

Every registered sampler has one signature (DESIGN.md §3; after k-diffusion's):
    fn(model, noise, times, cond=None, guidance=1.0, generator=None) -> x
with ``times`` a strictly descending grid from 1 to 0 (e.g. [1, 0.5, 0]), ``cond`` (B,) labels or
None, ``guidance`` the CFG scale w (u = u_null + w (u_cond - u_null)) and ``generator`` seeding any
fresh noise. ``sample(name, model, noise, nfe=...)`` builds the grid for you.

    x = sample("meanflow", net, torch.randn(16, 4, 32, 32), nfe=1, cond=labels)
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from flowzoo.registry import SAMPLERS
from flowzoo.samplers import consistency, euler, heun, meanflow  # noqa: F401  (registers the built-ins)
from flowzoo.samplers.common import as_times, guided_velocity

__all__ = ["TIME_GRIDS", "time_grid", "sample", "guided_velocity"]

# Grid kinds: steps -> descending times from 1 to 0. Uniform is what MeanFlow / alpha-Flow report
# (their 2-step grid is [1, 0.5, 0]).
TIME_GRIDS: dict[str, Callable[[int], list[float]]] = {
    "uniform": lambda steps: [1.0 - i / steps for i in range(steps + 1)],
}


def time_grid(steps: int | Sequence[float] | Tensor, kind: str = "uniform") -> list[float]:
    """Descending time grid with ``steps`` intervals of the given kind, or an explicit grid checked as is."""
    if not isinstance(steps, int):
        return as_times(steps)
    if steps < 1:
        raise ValueError(f"the number of steps must be at least 1, got {steps}.")
    if kind not in TIME_GRIDS:
        raise ValueError(f"unknown time grid '{kind}'; choose one of {', '.join(sorted(TIME_GRIDS))}.")
    return as_times(TIME_GRIDS[kind](steps))


def sample(
    name: str,
    model: nn.Module,
    noise: Tensor,
    nfe: int | None = None,
    times: Sequence[float] | Tensor | None = None,
    cond: Tensor | None = None,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    grid: str = "uniform",
) -> Tensor:
    """Run sampler ``name`` on an explicit ``times`` grid, or on a ``grid`` of the kind built for ``nfe``.

    ``nfe`` counts network evaluations per sample (a guided evaluation counts once, as is usual).
    Samplers that take several evaluations per step say so with a ``steps_for_nfe`` attribute (Heun);
    without nfe or times the sampler's ``default_nfe`` is used (1 for meanflow / consistency).
    """
    fn = SAMPLERS.get(name)
    if times is None:
        if nfe is None:
            nfe = getattr(fn, "default_nfe", 1)
        steps = getattr(fn, "steps_for_nfe", lambda n: n)(nfe)
        times = time_grid(steps, grid)
    elif nfe is not None:
        raise ValueError("pass either nfe or times to sample(), not both.")
    return fn(model, noise, times, cond=cond, guidance=guidance, generator=generator)
