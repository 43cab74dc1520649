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


@TIME_SAMPLERS.register("uniform_single")
class UniformSingle:
    """One draw t ~ U(0, 1) and r = t: the flow-matching rows' own time where the pairs are uniform (the
    digits overrides give the presets that draw their r = t rows separately this, beside uniform pairs)."""

    def __call__(self, batch_size: int, *, generator=None, device=None) -> tuple[Tensor, Tensor]:
        t = torch.rand(batch_size, generator=generator, device=device)
        return t, t.clone()


@TIME_SAMPLERS.register("dyadic")
class DyadicGrid:
    """Shortcut models' grid (Frans et al. 2024): step h = t - r = 2^-k, k in {0..levels}, t uniform on the
    multiples of h in [h, 1]. With alpha = 1/2 each target is two steps of h/2, so the smallest bootstrapped
    step is 2^-(levels+1) (levels = 6: 1/128, Shortcut's finest d).

    k is uniform per sample, or with ``stratified`` as Shortcut's code assigns it (kvfrans/shortcut-models
    targets_shortcut.py get_targets, bootstrap_dt_bias 0): n // (levels + 1) samples at each level and the
    remainder at k = 0 (h = 1), in random order; the objective calls it with the bootstrap rows only
    (fm_times set), so a batch of 256 with 32 bootstrap rows has 4 per level and 8 at h = 1."""

    def __init__(self, levels: int = 6, stratified: bool = False):
        self.levels, self.stratified = int(levels), bool(stratified)

    def _levels(self, batch_size: int, generator, device) -> Tensor:
        if not self.stratified:
            return torch.randint(0, self.levels + 1, (batch_size,), generator=generator, device=device)
        per_level = batch_size // (self.levels + 1)
        k = torch.arange(self.levels + 1, device=device).repeat_interleave(per_level)
        k = torch.cat([k, torch.zeros(batch_size - k.numel(), dtype=k.dtype, device=device)])
        return k[torch.randperm(batch_size, generator=generator, device=device)]

    def __call__(self, batch_size: int, *, generator=None, device=None) -> tuple[Tensor, Tensor]:
        k = self._levels(batch_size, generator, device)
        h = torch.pow(2.0, -k.to(torch.float32))
        # t = j h with j uniform in {1, ..., 2^k}
        j = torch.floor(torch.rand(batch_size, generator=generator, device=device) * 2.0 ** k) + 1
        t = j * h
        return t, t - h


@TIME_SAMPLERS.register("grid_step")
class GridStep:
    """t uniform on {1/steps, 2/steps, ..., 1} and r = t - 1/steps: one step of the finest grid.

    Shortcut's flow-matching rows (kvfrans/shortcut-models targets_shortcut.py get_targets: t on the
    denoise_timesteps = 128 grid, dt_base = log2(128), i.e. d = 1/128): trained on the data velocity at the
    finest step, the level the finest bootstrap (two half steps of 1/64) queries. In flowzoo's convention
    (t = 1 noise) the code's t in {0, ..., 127/128} (0 noise) becomes t = 1 - that, r = t - 1/128."""

    def __init__(self, steps: int = 128):
        if int(steps) < 1:
            raise ValueError(f"grid_step steps must be a positive integer, got {steps}")
        self.steps = int(steps)

    def __call__(self, batch_size: int, *, generator=None, device=None) -> tuple[Tensor, Tensor]:
        j = torch.randint(1, self.steps + 1, (batch_size,), generator=generator, device=device).to(torch.float32)
        return j / self.steps, (j - 1) / self.steps


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


@TIME_SAMPLERS.register("lognormal_sigma")
class LogNormalSigma(ConsistencyTimes):
    """EDM's log-normal noise level sigma on the linear path, r = 0: ECT's t draw.

    locuslab/ect @ 4311059, training/loss.py ECMLoss.__call__: sigma = exp(N(P_mean, P_std)), -1.1, 2.0.

    z_t / (1 - t) = x + sigma e with sigma = t / (1 - t), so t = sigmoid(ln sigma): mean and std are
    EDM's P_mean and P_std of ln sigma, and the median t is sigmoid(P_mean). Unclamped, as ECT's sigma.
    """

    def __init__(self, mean: float = -1.1, std: float = 2.0):
        super().__init__(mean, std, t_min=0.0)


def apply_fm_ratio(t: Tensor, r: Tensor, fm_ratio: float, *, generator=None) -> tuple[Tensor, Tensor]:
    """Set r = t on exactly round(fm_ratio * B) samples chosen at random (the flow-matching samples).

    An exact count (not a Bernoulli draw per sample) as in the official MeanFlow code, so the split
    of every batch is what the config says.
    """
    is_fm = choose_fm_rows(t.shape[0], fm_ratio, generator=generator, device=t.device)
    return t, torch.where(is_fm, t, r)


def fm_count(batch: int, fm_ratio: float) -> int:
    """How many of a batch's rows train as flow matching: exactly round(fm_ratio * batch)."""
    if not 0.0 <= fm_ratio <= 1.0:
        raise ValueError(f"fm_ratio must lie in [0, 1], got {fm_ratio}")
    return int(round(fm_ratio * batch))


def choose_fm_rows(batch: int, fm_ratio: float, *, generator=None, device=None) -> Tensor:
    """The flow-matching rows: exactly round(fm_ratio * batch) of them, chosen at random (bool (batch,))."""
    chosen = torch.randperm(batch, generator=generator, device=device)[:fm_count(batch, fm_ratio)]
    is_fm = torch.zeros(batch, dtype=torch.bool, device=device)
    is_fm[chosen] = True
    return is_fm


@TIME_SAMPLERS.register("soflow")
class SoFlowPairs:
    """SoFlow's consistency pairs (zlab-princeton/SoFlow @ 3b60d60, train.py Learner.train; imagenet.yaml
    time_mean [-0.2, -1.0, 0.2], time_std [1.0, 0.8, 0.8]): two independent logit-normal draws, not sorted,

        t = max(sigmoid(N(t_mean, t_std)), min_gap),   r = min(sigmoid(N(r_mean, r_std)), t - min_gap).

    When the r draw comes out above t (P = Phi(-(t_mean - r_mean) / sqrt(t_std^2 + r_std^2)) = 0.144 at
    the defaults) the pair collapses to r = t - min_gap, where the exponential schedule's min_gap gives
    alpha = 1: a flow-matching target at h = min_gap. The flow-matching rows' own t (the code's first
    time draw, logit-normal(-0.2, 1)) is the objective's fm_times, not this sampler's.
    """

    def __init__(self, t_mean: float = 0.2, t_std: float = 0.8, r_mean: float = -1.0, r_std: float = 0.8,
                 min_gap: float = 1e-4):
        self.t_mean, self.t_std, self.r_mean, self.r_std = float(t_mean), float(t_std), float(r_mean), float(r_std)
        self.min_gap = float(min_gap)

    def __call__(self, batch_size: int, *, generator=None, device=None) -> tuple[Tensor, Tensor]:
        n_r, n_t = torch.randn(2, batch_size, generator=generator, device=device)  # the code's time1, time2
        t = torch.sigmoid(n_t * self.t_std + self.t_mean).clamp(min=self.min_gap)
        r = torch.minimum(torch.sigmoid(n_r * self.r_std + self.r_mean), t - self.min_gap)
        return t, r
