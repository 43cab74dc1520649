"""Shift velocities v~: the velocity that moves z_t to z_s and anchors the target (DESIGN.md §2).

Each is a callable ``shift(ctx) -> v~`` over a ``ShiftContext``. All network calls are stop-gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flowzoo.registry import SHIFT_VELOCITIES
from flowzoo.objectives.velocity import ConditionedVelocity


@dataclass
class ShiftContext:
    z_t: Tensor
    r: Tensor
    t: Tensor
    s: Tensor
    v: Tensor  # data velocity e - x
    labels: Tensor | None  # after label dropout
    dropped: Tensor  # bool (B,): the label was dropped to null
    null_label: int
    target_net: nn.Module  # the network that plays u- (online under stop-gradient, or EMA)
    fm: Tensor | None = None  # bool (B,): the rows trained as flow matching (None: the rows with r = t)


@SHIFT_VELOCITIES.register("data")
class DataVelocity:
    """v~ = v = e - x, the conditional (per-sample) velocity of the linear path.

    t_min > 0 gives v~ = (z_t - x) / max(t, t_min) = v t / max(t, t_min): the data velocity as an
    x-prediction network with that floor reads a perfect x^ = x (backbones/prediction.py), so below t_min
    the target shrinks with t exactly as the network's own u does. pMF's v_t (Lyy-iiis/pMF pmf.py,
    pixelMeanFlow.forward at 75f6073, t_min 0.05). 0 (the default) is e - x itself.
    """

    def __init__(self, t_min: float = 0.0):
        self.t_min = float(t_min)

    def __call__(self, ctx: ShiftContext) -> Tensor:
        if self.t_min <= 0:
            return ctx.v
        t = ctx.t.to(ctx.v.dtype).reshape(-1, *([1] * (ctx.v.dim() - 1)))
        return ctx.v * (t / t.clamp(min=self.t_min))


@SHIFT_VELOCITIES.register("cfg")
class GuidedDataVelocity:
    """Classifier-free guidance trained in (MeanFlow, Geng et al. 2025, Eq. 19 with kappa):

        v~ = omega v + kappa u-(z_t, t, t | c) + (1 - omega - kappa) u-(z_t, t, t | null)

    for t_min < t < t_max, and v~ = v outside that interval. At the fixed point u(.|c) = v~ this is
    guidance of effective scale omega / (1 - kappa).

    What the official alpha-Flow code does (src/training/loss.py, ``_compute_velocity_cfg``), and so the
    default here:
    - labels are dropped to null only inside the interval (``drop_outside_interval: false``): outside
      it no label is dropped, and the sample trains on v with its label;
    - a dropped sample still gets the mix, with c = null: v~ = omega v + (1 - omega) u-(z_t, t, t | null)
      (``dropped: guided``).
    ``dropped: data`` (v~ = v for a dropped label) and ``drop_outside_interval: true`` are the choices an
    earlier flowzoo made; they are kept as named options. At omega = 1 both ``dropped`` choices agree.

    decay_time < 1 fades the guidance out toward t = 1, as SoFlow's code does (zlab-princeton/SoFlow
    models.py, Soflow.get_cfg_decay_scale; cfg_decay_time 0.8, k = 0.025): with d(t) = 1 for t <= T and
    d = 1 - exp(-k q / (1 - q)), q = (1 - t) / (1 - T) (q clipped below 1 - 1e-6) above it,
    v~ = d mix + (1 - d) (kappa u-(c) + (1 - kappa) v), so the effective scale falls to 1 at t = 1.
    """

    def __init__(self, omega: float = 1.0, kappa: float = 0.5, t_min: float = 0.0, t_max: float = 1.0,
                 dropped: str = "guided", drop_outside_interval: bool = False,
                 decay_time: float = 1.0, decay_k: float = 0.025):
        if dropped not in ("guided", "data"):
            raise ValueError(f"cfg dropped must be 'guided' or 'data', not {dropped!r}")
        self.omega, self.kappa, self.t_min, self.t_max = float(omega), float(kappa), float(t_min), float(t_max)
        self.dropped, self.drop_outside_interval = dropped, bool(drop_outside_interval)
        self.decay_time, self.decay_k = float(decay_time), float(decay_k)

    @property
    def effective_scale(self) -> float:
        return self.omega / (1.0 - self.kappa)

    def in_interval(self, t: Tensor) -> Tensor:
        return (t > self.t_min) & (t < self.t_max)

    def droppable(self, t: Tensor) -> Tensor:
        """Which samples label dropout may act on (the objective asks before dropping)."""
        return torch.ones_like(t, dtype=torch.bool) if self.drop_outside_interval else self.in_interval(t)

    def __call__(self, ctx: ShiftContext) -> Tensor:
        guided = self.in_interval(ctx.t)
        if self.dropped == "data":
            guided = guided & ~ctx.dropped
        if ctx.labels is None or not bool(guided.any()):
            return ctx.v
        idx = guided.nonzero().squeeze(1)
        n = idx.numel()
        z = ctx.z_t[idx].repeat(2, *([1] * (ctx.z_t.dim() - 1)))
        t = ctx.t[idx].repeat(2)
        # ctx.labels are after dropout: a dropped sample's "conditional" call is the null call.
        labels = torch.cat([ctx.labels[idx], torch.full_like(ctx.labels[idx], ctx.null_label)])
        with torch.no_grad():  # one batched call for the conditional and the unconditional branch
            u_both = ConditionedVelocity(ctx.target_net, labels)(z, t, t).to(ctx.v.dtype)
        u_cond, u_null = u_both[:n], u_both[n:]
        mixed = self.omega * ctx.v[idx] + self.kappa * u_cond + (1 - self.omega - self.kappa) * u_null
        if self.decay_time < 1.0:
            q = ((1 - ctx.t[idx]) / (1 - self.decay_time)).clamp(0.0, 1 - 1e-6)
            d = torch.where(ctx.t[idx] <= self.decay_time, 1.0, 1 - torch.exp(-self.decay_k * q / (1 - q)))
            d = d.to(mixed.dtype).reshape(-1, *([1] * (mixed.dim() - 1)))
            mixed = d * mixed + (1 - d) * (self.kappa * u_cond + (1 - self.kappa) * ctx.v[idx])
        v_shift = ctx.v.clone()
        v_shift[idx] = mixed
        return v_shift


def _model_velocity_where_bootstrapped(ctx: ShiftContext, start: Tensor) -> Tensor:
    """u-(z_t, start, t) on the r < t samples (stop-gradient), v elsewhere: r = t samples cost no call, and
    neither do flow-matching rows trained at a finite step (Shortcut's h = 1/128: their target is v)."""
    bootstrap = ctx.r < ctx.t
    if ctx.fm is not None:
        bootstrap = bootstrap & ~ctx.fm
    if not bool(bootstrap.any()):
        return ctx.v
    idx = bootstrap.nonzero().squeeze(1)
    labels = None if ctx.labels is None else ctx.labels[idx]
    with torch.no_grad():
        u = ConditionedVelocity(ctx.target_net, labels)(ctx.z_t[idx], start[idx], ctx.t[idx])
    out = ctx.v.clone()
    out[idx] = u.to(ctx.v.dtype)
    return out


@SHIFT_VELOCITIES.register("model")
class ModelVelocity:
    """v~ = u-(z_t, s, t): the model's own average velocity over [s, t] (Shortcut models' first step).

    With alpha = 1/2 the two-point target becomes Shortcut's self-consistency target
    (u-(z_t, s, t) + u-(z_s, r, s)) / 2. Flow-matching samples (r = t) keep v~ = v.
    """

    def __call__(self, ctx: ShiftContext) -> Tensor:
        return _model_velocity_where_bootstrapped(ctx, ctx.s)


@SHIFT_VELOCITIES.register("instantaneous")
class InstantaneousModelVelocity:
    """w = u-(z_t, t, t): the model's own instantaneous-velocity prediction (its r = t output).

    iMF's JVP tangent (Geng et al. 2025, "Improved Mean Flows", Sec. 3: the tangent of the total derivative
    is the predicted v instead of e - x; its code, Lyy-iiis/imeanflow imf.py, predicts v with an auxiliary
    head, and the paper names u(z_t, t, t) as the head-free choice, which is this). Used as the objective's
    ``tangent``; r = t samples (alpha = 1) never use a tangent, so they keep v and cost no call.
    """

    def __call__(self, ctx: ShiftContext) -> Tensor:
        return _model_velocity_where_bootstrapped(ctx, ctx.t)


@SHIFT_VELOCITIES.register("teacher")
class TeacherVelocity:
    """v~ = v_T(z_t, t): a frozen teacher's instantaneous velocity, for distillation.

    The teacher is a flowzoo run (a flow-matching run is the natural one): ``checkpoint`` is its
    checkpoint file, read weights-only with the run's config.yaml beside it, ``ema`` picks which EMA
    (-1: raw weights). ``guidance`` > 1 distils the teacher's CFG velocity
    v_null + guidance (v_c - v_null). Every sample regresses onto the teacher: r = t samples get
    u(z_t, t, t) -> v_T (the flow-matching part distils too), r < t samples get the objective's target
    with v_T as anchor and tangent. The teacher is not a submodule: it is never trained, saved with the
    student, or broadcast by DDP.
    """

    def __init__(self, checkpoint: str, ema: int = 0, guidance: float = 1.0):
        from flowzoo.pipeline.sample import load_run  # the run pipeline imports the objectives

        net, _, _, _ = load_run(checkpoint, int(ema))
        for p in net.parameters():
            p.requires_grad_(False)
        self.net, self.guidance, self.checkpoint = net, float(guidance), str(checkpoint)

    def __call__(self, ctx: ShiftContext) -> Tensor:
        net = self.net
        first = next(net.parameters(), None)
        if first is not None and first.device != ctx.z_t.device:
            self.net = net = net.to(ctx.z_t.device)
        t = ctx.t
        with torch.no_grad():
            if self.guidance == 1.0 or ctx.labels is None:
                return ConditionedVelocity(net, ctx.labels)(ctx.z_t, t, t).to(ctx.v.dtype)
            n = ctx.z_t.shape[0]
            z = ctx.z_t.repeat(2, *([1] * (ctx.z_t.dim() - 1)))
            labels = torch.cat([ctx.labels, torch.full_like(ctx.labels, ctx.null_label)])
            both = ConditionedVelocity(net, labels)(z, t.repeat(2), t.repeat(2)).to(ctx.v.dtype)
            v_c, v_null = both[:n], both[n:]
            return v_null + self.guidance * (v_c - v_null)
