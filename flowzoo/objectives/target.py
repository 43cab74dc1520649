"""The unified alpha-Flow target: one function for Flow Matching, Shortcut, MeanFlow and CT.

AlphaFlow (Zhang et al., ICLR 2026), Eq. (alpha-Flow objective), in DESIGN.md §1 conventions
(t = 1 is noise, r <= t, u is the average velocity over [r, t]):

    s     = alpha r + (1 - alpha) t                       intermediate time
    z_s   = z_t - (t - s) w                               one step along the tangent velocity w
    alpha > 0 : u_tgt = alpha v~ + (1 - alpha) u-(z_s, r, s)      two-point target
    alpha = 0 : u_tgt = v~ - (t - r) d/dt u-(z_t, r, t)           MeanFlow's JVP target, tangents (w, 0, 1)
    alpha = 1 : u_tgt = v~                                         (no network call)

u- is the network under stop-gradient (or an EMA copy). The alpha = 0 case is the alpha -> 0 limit
of the two-point target: u-(z_s, r, s) = u- - alpha (t - r) (du/dz w + du/dt) + O(alpha^2).

v~ (the shift velocity) anchors the target; w (the tangent) is the velocity the path is followed with.
They are the same velocity (w = v~) in every method of the alpha-Flow paper. The methods after it
pull them apart: iMF (Geng et al. 2025, "Improved Mean Flows") keeps the data (or guided) velocity as
the anchor but takes the JVP along the model's own instantaneous velocity, w = u-(z_t, t, t).
Distillation sets both to a frozen teacher's velocity. The JVP-free objectives are the two-point
branch: SoFlow's solution consistency (w = v~ = v, alpha = the l-to-t ratio), SplitMeanFlow's interval
splitting (w = v~ = u-(z_t, s, t), alpha ~ U(0, 1)), and TiM is the JVP branch with a finite difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flowzoo.objectives.jvp import get_jvp_backend
from flowzoo.objectives.velocity import VelocityFn, restrict


def per_sample(a: Tensor, like: Tensor) -> Tensor:
    """Reshape a (B,) tensor to broadcast against a (B, ...) tensor."""
    return a.reshape(-1, *([1] * (like.dim() - 1)))


@dataclass
class AlphaTarget:
    """The target and the pieces the loss decomposition (L_TFM, L_TC) needs, all detached.

    u_next is u-(z_s, r, s) where 0 < alpha < 1 and du_dt is d/dt u-(z_t, r, t) where alpha = 0;
    both are zero elsewhere (see ``two_point`` / ``jvp`` masks).
    """

    u_tgt: Tensor
    s: Tensor
    u_next: Tensor
    du_dt: Tensor
    two_point: Tensor  # bool (B,), 0 < alpha < 1
    jvp: Tensor  # bool (B,), alpha == 0


def alpha_target_parts(
    u: VelocityFn,
    z_t: Tensor,
    r: Tensor,
    t: Tensor,
    alpha: Tensor,
    v_shift: Tensor,
    *,
    jvp: str | dict = "forward",
    clamp: float | None = None,
    tangent: Tensor | None = None,
    point_clamp: float | None = None,
    fm: Tensor | None = None,
) -> AlphaTarget:
    """``alpha_target`` returning its intermediate pieces too; see the module docstring."""
    if alpha.shape != t.shape or r.shape != t.shape or t.dim() != 1:
        raise ValueError("alpha, r and t must be per-sample tensors of shape (B,)")
    two_point = (alpha > 0) & (alpha < 1)
    at_zero = alpha == 0
    # One host read for the three branch decisions (each bool(...) is a device sync on a GPU).
    bad_alpha, any_two_point, any_at_zero = torch.stack(
        [((alpha < 0) | (alpha > 1)).any(), two_point.any(), at_zero.any()]).tolist()
    if bad_alpha:
        raise ValueError("alpha must lie in [0, 1]")
    batch = z_t.shape[0]
    v_shift = v_shift.detach()
    w = v_shift if tangent is None else tangent.detach()
    s = alpha * r + (1 - alpha) * t
    u_tgt = v_shift.clone()
    u_next = torch.zeros_like(v_shift)
    du_dt = torch.zeros_like(v_shift)

    if any_two_point:
        idx = two_point.nonzero().squeeze(1)
        a, ri, ti, si = alpha[idx], r[idx], t[idx], s[idx]
        z_s = z_t[idx] - per_sample(ti - si, z_t) * w[idx]
        if point_clamp is not None:  # Shortcut's code clips its intermediate point x_t2 to +-4 as well as the target
            z_s = z_s.clamp(-point_clamp, point_clamp)
        with torch.no_grad():
            u_s = restrict(u, idx, batch, z_t)(z_s, ri, si).to(v_shift.dtype)
        u_next[idx] = u_s
        u_tgt[idx] = per_sample(a, z_t) * v_shift[idx] + per_sample(1 - a, z_t) * u_s

    # The official alpha-Flow code (src/training/loss.py, _compute_mean_velocity_d) clamps only the
    # two-point targets of r < t samples with alpha > 0 (+-4 on ImageNet latents); a flow-matching sample
    # (r = t) keeps its target v~ unclamped, and so does the JVP branch (alpha = 0). Shortcut's code
    # likewise clips only its bootstrap (r < t) targets.
    if clamp is not None:
        bootstrapped = (alpha > 0) & (r < t)
        if fm is not None:  # a flow-matching row trained at a finite step (Shortcut's h = 1/128) keeps v unclamped
            bootstrapped = bootstrapped & ~fm
        u_tgt[bootstrapped] = u_tgt[bootstrapped].clamp(-clamp, clamp)

    if any_at_zero:
        idx = at_zero.nonzero().squeeze(1)
        ri, ti = r[idx], t[idx]
        _, d = get_jvp_backend(jvp)(restrict(u, idx, batch, z_t), z_t[idx].detach(), ri, ti, w[idx])
        d = d.to(v_shift.dtype)
        du_dt[idx] = d
        u_tgt[idx] = v_shift[idx] - per_sample(ti - ri, z_t) * d

    return AlphaTarget(u_tgt.detach(), s, u_next, du_dt, two_point, at_zero)


def alpha_target(
    u: VelocityFn,
    z_t: Tensor,
    r: Tensor,
    t: Tensor,
    alpha: Tensor,
    v_shift: Tensor,
    *,
    jvp: str | dict = "forward",
    clamp: float | None = None,
    tangent: Tensor | None = None,
    point_clamp: float | None = None,
    fm: Tensor | None = None,
) -> Tensor:
    """The alpha-Flow regression target u_tgt for the average velocity u(z_t, r, t) (stop-gradient).

    u: callable u(z, r, t) -> average velocity (batched; a ConditionedVelocity lets each branch run
    on its own samples only). r, t, alpha: per-sample tensors of shape (B,), 0 <= r <= t <= 1,
    alpha in [0, 1]; samples with alpha == 0 take the JVP branch (backend ``jvp``: "forward",
    "double_backward", "finite_difference" or a registered plugin). v_shift: the shift velocity v~,
    shaped like z_t. clamp: optional bound on the targets of r < t samples with alpha > 0. tangent: the
    velocity w the path is followed with (z_s = z_t - (t - s) w, and the JVP's tangent); None means
    w = v~, as in every method of the alpha-Flow paper. point_clamp: optional bound on the two-point branch's
    intermediate point z_s. fm: the rows trained as flow matching (bool (B,)), never clamped; None means
    the rows with r = t. ``jvp`` may also be a spec {name: ..., **args},
    e.g. {name: finite_difference, eps: 0.005} (TiM). This signature is stable.
    """
    return alpha_target_parts(u, z_t, r, t, alpha, v_shift, jvp=jvp, clamp=clamp, tangent=tangent,
                              point_clamp=point_clamp, fm=fm).u_tgt


def loss_decomposition(pred: Tensor, v_shift: Tensor, parts: AlphaTarget, alpha: Tensor, t: Tensor, r: Tensor):
    """The paper's split of the (1/alpha)-weighted loss into L_TFM and L_TC, per sample.

    For a convex combination, ||u - (a v + (1-a) w)||^2 = a||u - v||^2 + (1-a)||u - w||^2 - a(1-a)||v - w||^2,
    so (1/alpha) ||Delta||^2 = L_TFM + L_TC + const(theta) with
        L_TFM = ||u - v~||^2                                   trajectory flow matching
        L_TC  = (1 - alpha)/alpha ||u - u-(z_s, r, s)||^2       trajectory consistency, alpha > 0
        L_TC  = 2 (t - r) <u, sg(du/dt)>                        its alpha -> 0 limit (MeanFlow)
    Both keep the graph to ``pred`` so their gradients can be compared (``flowzoo analyze``).
    Norms are per-element means, as everywhere in flowzoo.
    """
    l_tfm = (pred - v_shift).pow(2).flatten(1).mean(1)
    safe_alpha = torch.where(parts.two_point, alpha, torch.ones_like(alpha))
    tc_two_point = (1 - safe_alpha) / safe_alpha * (pred - parts.u_next).pow(2).flatten(1).mean(1)
    tc_jvp = 2 * (t - r) * (pred * parts.du_dt).flatten(1).mean(1)
    zero = torch.zeros_like(l_tfm)
    l_tc = torch.where(parts.two_point, tc_two_point, torch.where(parts.jvp, tc_jvp, zero))
    return l_tfm, l_tc


def directional_error(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Per sample, the mean over positions of 1 - cos(pred, target), the cosine over the channel dim (dim 1).

    TiM's directional loss (Wang et al. 2025; WZDTHU/TiM tim/schedulers/transition.py, ``__call__`` with
    ``use_dir_loss``): on (B, C, H, W) outputs one cosine per pixel across the C channels, averaged over
    the pixels; a flat (B, D) sample is a single vector. cos = <a, b> / (max(|a|, eps) max(|b|, eps)),
    torch's cosine_similarity with its default eps (each norm clamped separately). Its gradient vanishes
    where pred = target, so it adds no bias at the exact fixed point. With one channel (digits' 1x8x8)
    the cosine is a sign: the term is piecewise constant and only moves an adaptive weight.
    """
    cos = torch.nn.functional.cosine_similarity(pred, target, dim=1, eps=eps)
    return (1 - cos).reshape(cos.shape[0], -1).mean(1)
