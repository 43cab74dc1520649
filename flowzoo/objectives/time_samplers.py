"""Time samplers: draw (t, r) pairs with 0 <= r <= t <= 1 (t = 1 is noise).

The objective then sets r = t on a fraction fm_ratio of the batch (see ``apply_fm_ratio``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowzoo.registry import TIME_SAMPLERS


def _sorted_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    return torch.maximum(a, b), torch.minimum(a, b)


@TIME_SAMPLERS.register("logit_normal")
class LogitNormalPairs:
    """Two independent draws sigmoid(N(mean, std)); t = max, r = min (MeanFlow / alpha-Flow, mean -0.4, std 1).

    r_zero_ratio > 0 sets r = 0 on that fraction of the batch (exact count, random samples), TiM's
    "consistency" samples (WZDTHU/TiM: consistency_ratio). It acts before fm_ratio picks its r = t
    samples, so r = 0 ends up on r_zero_ratio (1 - fm_ratio) of the batch on average.
    """

    def __init__(self, mean: float = -0.4, std: float = 1.0, r_zero_ratio: float = 0.0):
        if not 0.0 <= r_zero_ratio <= 1.0:
            raise ValueError(f"r_zero_ratio must lie in [0, 1], got {r_zero_ratio}")
        self.mean, self.std, self.r_zero_ratio = float(mean), float(std), float(r_zero_ratio)

    def __call__(self, batch_size: int, *, generator=None, device=None) -> tuple[Tensor, Tensor]:
        n = torch.randn(2, batch_size, generator=generator, device=device) * self.std + self.mean
        a, b = torch.sigmoid(n)
        t, r = _sorted_pair(a, b)
        if self.r_zero_ratio > 0:  # drawn only when asked for, so other presets' streams are unchanged
            chosen = torch.randperm(batch_size, generator=generator, device=t.device)[:round(self.r_zero_ratio * batch_size)]
            r = r.index_fill(0, chosen, 0.0)
        return t, r


@TIME_SAMPLERS.register("logit_normal_single")
class LogitNormalSingle:
    """One draw t ~ sigmoid(N(mean, std)) and r = t: flow matching's time density (SD3's logit-normal).

    The pair sampler's t is the larger of two draws (skewed toward noise); pure flow matching wants
    the marginal itself."""

    def __init__(self, mean: float = -0.4, std: float = 1.0):
        self.mean, self.std = float(mean), float(std)

    def __call__(self, batch_size: int, *, generator=None, device=None) -> tuple[Tensor, Tensor]:
        t = torch.sigmoid(torch.randn(batch_size, generator=generator, device=device) * self.std + self.mean)
        return t, t.clone()


@TIME_SAMPLERS.register("uniform")
class UniformPairs:
    """Two independent draws U(0, 1); t = max, r = min."""

    def __call__(self, batch_size: int, *, generator=None, device=None) -> tuple[Tensor, Tensor]:
        a, b = torch.rand(2, batch_size, generator=generator, device=device)
        return _sorted_pair(a, b)


@TIME_SAMPLERS.register("dyadic")
class DyadicGrid:
    """Shortcut models' grid (Frans et al. 2024): step h = t - r = 2^-k, k uniform in {0..levels},
    t uniform on the multiples of h in [h, 1]. With alpha = 1/2 each target is two steps of h/2, so the
    smallest bootstrapped step is 2^-(levels+1) (levels = 6: 1/128, Shortcut's finest d)."""

    def __init__(self, levels: int = 6):
        self.levels = int(levels)

    def __call__(self, batch_size: int, *, generator=None, device=None) -> tuple[Tensor, Tensor]:
        k = torch.randint(0, self.levels + 1, (batch_size,), generator=generator, device=device)
        h = torch.pow(2.0, -k.to(torch.float32))
        # t = j h with j uniform in {1, ..., 2^k}
        j = torch.floor(torch.rand(batch_size, generator=generator, device=device) * 2.0 ** k) + 1
        t = j * h
        return t, t - h


@TIME_SAMPLERS.register("consistency")
class ConsistencyTimes:
    """Consistency training in x0 form: r = 0, t ~ sigmoid(N(mean, std)) clipped to [t_min, 1].

    The predicted data point is f(z_t, t) = z_t - t u(z_t, 0, t); the pair partner t' = s comes from the
    alpha schedule (``ct_discrete``). t_min keeps t away from 0, where f is the identity.
    """

    def __init__(self, mean: float = -0.4, std: float = 1.0, t_min: float = 1e-3):
        self.mean, self.std, self.t_min = float(mean), float(std), float(t_min)

    def __call__(self, batch_size: int, *, generator=None, device=None) -> tuple[Tensor, Tensor]:
        n = torch.randn(batch_size, generator=generator, device=device) * self.std + self.mean
        t = torch.sigmoid(n).clamp(min=self.t_min)
        return t, torch.zeros_like(t)


def apply_fm_ratio(t: Tensor, r: Tensor, fm_ratio: float, *, generator=None) -> tuple[Tensor, Tensor]:
    """Set r = t on exactly round(fm_ratio * B) samples chosen at random (the flow-matching samples).

    An exact count (not a Bernoulli draw per sample) as in the official MeanFlow code, so the split
    of every batch is what the config says.
    """
    if not 0.0 <= fm_ratio <= 1.0:
        raise ValueError(f"fm_ratio must lie in [0, 1], got {fm_ratio}")
    batch = t.shape[0]
    n_fm = int(round(fm_ratio * batch))
    chosen = torch.randperm(batch, generator=generator, device=t.device)[:n_fm]
    is_fm = torch.zeros(batch, dtype=torch.bool, device=t.device)
    is_fm[chosen] = True
    return t, torch.where(is_fm, t, r)
