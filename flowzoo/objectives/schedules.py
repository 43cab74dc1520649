"""Schedules over training steps k: alpha for the unified objective, and fm_ratio.

A schedule gives ``value(k)`` (one number per step) and ``per_sample(k, t, r)`` (shape (B,)); only
per-sample schedules (the CT discretisation) override the latter. Schedules are pure functions of the
step, so a resumed run needs nothing but the step to continue them.

Windows [k_s, k_e] are given in steps, or as fractions of the run with ``start_frac`` / ``end_frac``
(resolved against ``total_steps``), so "sigmoid over the whole run" needs no step count in a config.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowzoo.registry import SCHEDULES


class Schedule:
    # A schedule whose per-sample values are random sets this: the objective then draws one U(0, 1) per
    # sample from the step's generator (with the other draws, so a run stays reproducible) and passes it.
    random_draws = False

    def value(self, step: int) -> float:
        raise NotImplementedError

    def per_sample(self, step: int, t: Tensor, r: Tensor, draws: Tensor | None = None) -> Tensor:
        return torch.full_like(t, self.value(step))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def _window(k_s, k_e, start_frac, end_frac, total_steps) -> tuple[float, float]:
    """Resolve a [k_s, k_e] window from steps or fractions of the run."""
    if k_s is None or k_e is None:
        if total_steps is None:
            raise ValueError("this schedule needs k_s and k_e, or start_frac/end_frac with a known number of steps")
        k_s = start_frac * total_steps if k_s is None else k_s
        k_e = end_frac * total_steps if k_e is None else k_e
    if k_e <= k_s:
        raise ValueError(f"schedule window must have k_e > k_s (got k_s={k_s}, k_e={k_e})")
    return float(k_s), float(k_e)


def _progress(step: int, k_s: float, k_e: float) -> float:
    return min(max((step - k_s) / (k_e - k_s), 0.0), 1.0)


@SCHEDULES.register("constant")
class ConstantSchedule(Schedule):
    def __init__(self, value: float = 0.0, total_steps: int | None = None):
        self.constant = float(value)

    def value(self, step: int) -> float:
        return self.constant


@SCHEDULES.register("step")
class StepSchedule(Schedule):
    """``before`` until step ``k`` (or fraction ``frac`` of the run), then ``after``."""

    def __init__(self, before: float = 1.0, after: float = 0.0, k: int | None = None,
                 frac: float = 0.5, total_steps: int | None = None):
        if k is None:
            if total_steps is None:
                raise ValueError("step schedule needs k, or frac with a known number of steps")
            k = int(frac * total_steps)
        self.before, self.after, self.k = float(before), float(after), int(k)

    def value(self, step: int) -> float:
        return self.before if step < self.k else self.after


@SCHEDULES.register("linear")
class LinearSchedule(Schedule):
    """From ``start`` to ``end`` linearly over [k_s, k_e], constant outside."""

    def __init__(self, start: float = 1.0, end: float = 0.0, k_s: int | None = None, k_e: int | None = None,
                 start_frac: float = 0.0, end_frac: float = 1.0, total_steps: int | None = None):
        self.start, self.end = float(start), float(end)
        self.k_s, self.k_e = _window(k_s, k_e, start_frac, end_frac, total_steps)

    def value(self, step: int) -> float:
        return self.start + (self.end - self.start) * _progress(step, self.k_s, self.k_e)


@SCHEDULES.register("cosine")
class CosineSchedule(LinearSchedule):
    """From ``start`` to ``end`` along half a cosine over [k_s, k_e]."""

    def value(self, step: int) -> float:
        w = 0.5 * (1 - math.cos(math.pi * _progress(step, self.k_s, self.k_e)))
        return self.start + (self.end - self.start) * w


@SCHEDULES.register("sigmoid")
class SigmoidSchedule(Schedule):
    """alpha-Flow's curriculum (AlphaFlow, ICLR 2026, Sec. 4): trajectory FM (alpha = 1) -> MeanFlow (0).

        alpha(k) = 1 - sigmoid(gamma (k - (k_s + k_e)/2) / (k_e - k_s)),
        then alpha < eta -> 0 and alpha > 1 - eta -> 1 (eta = 5e-3),
    so alpha is exactly 1 before mid - w (k_e - k_s) and exactly 0 after mid + w (k_e - k_s), with
    w = ln((1 - eta)/eta) / gamma (= 0.2117 for the published gamma = 25, eta = 5e-3).
    """

    def __init__(self, k_s: int | None = None, k_e: int | None = None, gamma: float = 25.0, eta: float = 5e-3,
                 start_frac: float = 0.0, end_frac: float = 1.0, total_steps: int | None = None):
        self.k_s, self.k_e = _window(k_s, k_e, start_frac, end_frac, total_steps)
        self.gamma, self.eta = float(gamma), float(eta)

    def value(self, step: int) -> float:
        mid = 0.5 * (self.k_s + self.k_e)
        x = self.gamma * (step - mid) / (self.k_e - self.k_s)
        alpha = 1.0 - 1.0 / (1.0 + math.exp(-x)) if x > -700 else 1.0
        if alpha < self.eta:
            return 0.0
        if alpha > 1.0 - self.eta:
            return 1.0
        return alpha


@SCHEDULES.register("exponential")
class ExponentialSchedule(LinearSchedule):
    """From ``start`` to ``end`` geometrically over [k_s, k_e]: log(value) is linear in the step.

    SoFlow's l-to-t ratio schedule (Luo et al. 2025, arXiv 2512.15657; 0.1 -> 0.002 in its reference
    setting), which in the unified objective is alpha itself (see presets/soflow.py). start, end > 0.

    min_gap > 0 keeps the intermediate time at least min_gap below t, as SoFlow's code does
    (train.py: l = min(t + (s - t) rho, t - 1e-4)): per sample alpha = max(rho, min_gap / (t - r)), and
    a pair with t - r = min_gap (up to the rounding of times stored in float32, 1e-3 relative) gets
    alpha = 1 exactly (there l = s: the pair's target is the shift velocity itself).
    """

    def __init__(self, start: float = 0.1, end: float = 0.002, min_gap: float = 0.0, **window):
        super().__init__(start, end, **window)
        if self.start <= 0 or self.end <= 0:
            raise ValueError(f"exponential schedule needs start, end > 0 (got {self.start}, {self.end})")
        self.min_gap = float(min_gap)

    def value(self, step: int) -> float:
        w = _progress(step, self.k_s, self.k_e)
        return math.exp((1 - w) * math.log(self.start) + w * math.log(self.end))

    def per_sample(self, step: int, t: Tensor, r: Tensor, draws: Tensor | None = None) -> Tensor:
        alpha = super().per_sample(step, t, r)
        if self.min_gap <= 0:
            return alpha
        gap = t - r
        alpha = torch.maximum(alpha, self.min_gap / gap.clamp(min=self.min_gap))
        return torch.where(gap <= self.min_gap * (1 + 1e-3), torch.ones_like(alpha), alpha)


@SCHEDULES.register("uniform")
class UniformPerSample(Schedule):
    """alpha ~ U(low, high) independently per sample and step: SplitMeanFlow's split point lambda
    (Guo et al. 2025, arXiv 2507.16884: s = (1 - lambda) t + lambda r, so alpha = lambda)."""

    random_draws = True

    def __init__(self, low: float = 0.0, high: float = 1.0, total_steps: int | None = None):
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"uniform alpha needs 0 <= low < high <= 1 (got {low}, {high})")
        self.low, self.high = float(low), float(high)

    def value(self, step: int) -> float:
        return 0.5 * (self.low + self.high)  # what is logged: the mean

    def per_sample(self, step: int, t: Tensor, r: Tensor, draws: Tensor | None = None) -> Tensor:
        if draws is None:
            raise ValueError("the uniform alpha schedule needs the step's draws (UnifiedObjective.draw makes them)")
        return self.low + (self.high - self.low) * draws.to(t.dtype)


@SCHEDULES.register("ct_discrete")
class ConsistencyDiscretisation(Schedule):
    """Consistency training's shrinking step, as a per-sample alpha (ECT, Geng et al. 2024).

    ECT pairs t with r' = t (1 - q^-(stage+1) (1 + k sigmoid(-b t))). With r = 0 in the unified
    objective, s = (1 - alpha) t, so the same pair is alpha = (t - r')/t = q^-(stage+1) (1 + k sigmoid(-b t)),
    clipped to 1. The stage grows every ``stage_steps`` (default: a quarter of the run), so alpha -> 0:
    discrete CT tends to continuous-time CT. ECT's b acts on EDM's sigma; here it acts on t in [0, 1].
    """

    def __init__(self, q: float = 2.0, k: float = 8.0, b: float = 1.0, stage_steps: int | None = None,
                 total_steps: int | None = None):
        if stage_steps is None:
            stage_steps = max(1, (total_steps or 100_000) // 4)
        self.q, self.k, self.b, self.stage_steps = float(q), float(k), float(b), int(stage_steps)

    def value(self, step: int) -> float:
        """The base ratio q^-(stage+1) (alpha at t -> infinity, and what is logged)."""
        return self.q ** -(step // self.stage_steps + 1)

    def per_sample(self, step: int, t: Tensor, r: Tensor, draws: Tensor | None = None) -> Tensor:
        alpha = self.value(step) * (1 + self.k * torch.sigmoid(-self.b * t))
        return alpha.clamp(max=1.0)


def build_schedule(spec, total_steps: int | None = None) -> Schedule:
    """A schedule from a number (constant), a name, or a mapping {name: ..., **arguments}."""
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return ConstantSchedule(float(spec))
    return SCHEDULES.build(spec, total_steps=total_steps)


@SCHEDULES.register("ect")
class ECTMapping(Schedule):
    """ECT's r(t) mapping over its training stages, as a per-sample alpha (Geng et al. 2024).

    "Consistency Models Made Easy"; locuslab/ect @ 4311059, training/loss.py ECMLoss.t_to_r_sigmoid and
    update_schedule, the stage set by training/ct_training_loop.py every ``double_ticks``.

    In EDM's noise level sigma = t / (1 - t), ECT pairs sigma with sigma_r = max(sigma (1 - a), 0),
        a = q^-(stage+1) (1 + k sigmoid(-b sigma))       (its adj='const' mapping is k = 0).
    With r = 0 the partner is s = sigma_r / (1 + sigma_r) and alpha = (t - s) / t, which is
        alpha = a' (1 - t) / (1 - a' t),   a' = min(a, 1)
    (a' = 1: ECT's r is clamped to 0, alpha = 1, whose target is the data x, as ECT's D_yr = y). So alpha
    is a at t -> 0 and falls like a (1 - t) toward t = 1, where ct_discrete's alpha stays at a's base.

    stage = step // stage_steps, held at ``stages - 1`` from there on (ECT's run ends in its last stage):
    ECT's CIFAR-10 run (run_ecm.sh) halves 8 times, every 250 ticks of 12.8 kimg at batch 128, i.e.
    every 25,000 of its 200,000 iterations; its 1-hour run (run_ecm_1hour.sh) is q = 256, stages = 1.
    By default stage_steps = total_steps // stages (25,000 when the run length is unknown). ECT's tick 0
    is a single iteration, so each of its stages starts one iteration later than here.
    """

    def __init__(self, q: float = 2.0, k: float = 8.0, b: float = 1.0, stages: int = 8,
                 stage_steps: int | None = None, total_steps: int | None = None):
        if q <= 1 or stages < 1:
            raise ValueError(f"ect schedule needs q > 1 and stages >= 1 (got q={q}, stages={stages})")
        if stage_steps is None:
            stage_steps = max(1, total_steps // stages) if total_steps else 25_000
        self.q, self.k, self.b, self.stages, self.stage_steps = float(q), float(k), float(b), int(stages), int(stage_steps)

    def stage(self, step: int) -> int:
        return min(step // self.stage_steps, self.stages - 1)

    def value(self, step: int) -> float:
        """ECT's decay q^-(stage+1) (1 minus its logged ``ratio``; a at sigma -> infinity); what is logged."""
        return self.q ** -(self.stage(step) + 1)

    def per_sample(self, step: int, t: Tensor, r: Tensor, draws: Tensor | None = None) -> Tensor:
        sigma = t / (1 - t)
        a = (self.value(step) * (1 + self.k * torch.sigmoid(-self.b * sigma))).clamp(max=1.0)
        return a * (1 - t) / (1 - a * t)
