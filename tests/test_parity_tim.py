"""flowzoo's tim preset against TiM's official training loss (WZDTHU/TiM at b431859), written out here from
its equations: tim/schedulers/transition.py (sample_t_and_r, dde_derivative, time_weighting,
adaptive_weighting, __call__ with use_dir_loss=True, as projects/train/trainer_c2i.py calls it),
tim/schedulers/transports.py (OT_FM) and configs/c2i/tim_xl_p2_256.yaml. Float64, a tiny conv network whose
output has a channel dim, identical draws.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flowzoo.objectives import create_objective
from flowzoo.objectives.target import directional_error
from flowzoo.objectives.unified import DrawnBatch
from flowzoo.registry import OBJECTIVES

torch.set_num_threads(1)

C, H, W = 3, 4, 4
NUM_CLASSES = 5


class TinyConvNet(nn.Module):
    """u(z, r, t) = net(z, t, h = t - r, y) on (B, C, H, W): conv, time/label embedding, conv."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.num_classes = NUM_CLASSES
        self.sample_shape = (C, H, W)
        self.inp = nn.Conv2d(C, width, 3, padding=1)
        self.time = nn.Linear(2, width)
        self.label = nn.Embedding(NUM_CLASSES + 1, width)
        self.out = nn.Conv2d(width, C, 1)

    def forward(self, z, t, h, y=None):
        if y is None:
            y = torch.full((z.shape[0],), NUM_CLASSES, dtype=torch.long, device=z.device)
        cond = self.time(torch.stack([t, h], 1)) + self.label(y)
        a = torch.tanh(self.inp(z) + cond[:, :, None, None])
        return self.out(a) * (1 + t)[:, None, None, None]


def _net(seed: int = 0) -> TinyConvNet:
    torch.manual_seed(seed)
    return TinyConvNet().double()


def _official_draws(batch: int, seed: int, diffusion_ratio=0.5, consistency_ratio=0.1, p_mean=-0.4, p_std=1.0,
                    dropout=0.1):
    """TiM's draws: x, noise z, (t, r) by sample_t_and_r, labels by trainer_c2i's dropout."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, C, H, W, generator=g, dtype=torch.float64)
    e = torch.randn(batch, C, H, W, generator=g, dtype=torch.float64)

    def sample_t():  # OT_FM.sample_t: sigma = exp(N(P_mean, P_std)), t = sigma / (1 + sigma)
        sigma = (torch.randn(batch, generator=g, dtype=torch.float64) * p_std + p_mean).exp()
        return sigma / (1 + sigma)

    t1, t2 = sample_t(), sample_t()
    t, r = torch.maximum(t1, t2), torch.minimum(t1, t2)
    n_diffusion = round(diffusion_ratio * batch)
    r[:n_diffusion] = t[:n_diffusion]
    n_consistency = round(consistency_ratio * batch)
    if n_consistency:
        r[-n_consistency:] = 0.0  # T_min
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    dropped = torch.rand(batch, generator=g) < dropout
    y = torch.where(dropped, torch.full_like(y, NUM_CLASSES), y)
    return x, e, t, r, y, dropped, n_diffusion


def _cosine_over_channels(a, b, eps=1e-8):
    """torch.nn.functional.cosine_similarity(a, b, dim=1) written out: each norm clamped at eps separately."""
    dot = (a * b).sum(1)
    return dot / (a.pow(2).sum(1).sqrt().clamp(min=eps) * b.pow(2).sum(1).sqrt().clamp(min=eps))


def _official_loss(net, x, e, t, r, y, n_diffusion, eps=0.005, sigma_d=1.0, adaptive_eps=10e-6, use_dir_loss=True):
    """TransitionSchedule.__call__ on OT_FM (linear path, c_noise(t) = t), without the REPA term."""
    b = lambda s: s[:, None, None, None]  # noqa: E731  (expand_t_like_x)
    F = lambda z, tt, rr: net(z, tt, tt - rr, y)  # noqa: E731  TiM's model(x_t, t, r) with new_condition t - r
    x_t = b(1 - t) * x + b(t) * e  # interpolant: alpha_t = 1 - t, sigma_t = t
    v_t = -x + e  # d_alpha_t = -1, d_sigma_t = 1
    F_pred = F(x_t, t, r)
    with torch.no_grad():  # dde_derivative: rows n_diffusion: only, the path re-evaluated at t +- eps, r fixed
        dF = torch.zeros_like(x)
        sl = slice(n_diffusion, None)
        path = lambda s: b(1 - s) * x[sl] + b(s) * e[sl]  # noqa: E731
        F_sub = lambda z, tt: net(z, tt, tt - r[sl], y[sl])  # noqa: E731
        dF[sl] = F_sub(path(t[sl] + eps), t[sl] + eps) / (2 * eps) - F_sub(path(t[sl] - eps), t[sl] - eps) / (2 * eps)
        F_target = v_t - b(t - r) * dF  # OT_FM.target, no enhance_target
    denoising = (F_pred - F_target).pow(2).mean(dim=(1, 2, 3))
    if use_dir_loss:
        denoising = denoising + (1 - _cosine_over_channels(F_pred, F_target)).mean(dim=(1, 2))
    # time_weighting: weight_time_tangent, weight_t_and_r, "sqrt"; 1 on the diffusion rows
    delta = torch.tan(t) - torch.tan(r)
    time_weight = 1 / (delta + sigma_d).sqrt()
    time_weight[:n_diffusion] = 1.0
    adaptive = 1 / (denoising.detach() + adaptive_eps)
    return (time_weight * adaptive * denoising).mean()


def _grads(loss, net):
    return torch.cat([p_grad.flatten() for p_grad in torch.autograd.grad(loss, list(net.parameters()))])


def _flowzoo_loss(objective, x, e, t, r, y, dropped):
    drawn = DrawnBatch(noise=e, t=t, r=r, labels=y, dropped=dropped)
    return objective.loss_terms(x, drawn, 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_tim_gradient_equals_the_official_transition_loss_with_the_directional_term(seed):
    net = _net(seed)
    x, e, t, r, y, dropped, n_diffusion = _official_draws(20, seed)
    assert (r == 0).sum() == 2 and (r == t).sum() == 10  # the draws exercise all three kinds of row
    official = _official_loss(net, x, e, t, r, y, n_diffusion)
    loss, terms = _flowzoo_loss(create_objective("tim", net), x, e, t, r, y, dropped)
    torch.testing.assert_close(loss, official, rtol=1e-10, atol=0)
    g_official, g_flowzoo = _grads(official, net), _grads(loss, net)
    assert (g_flowzoo - g_official).norm() <= 1e-8 * g_official.norm()
    assert terms.error is not terms.sq_err and bool((terms.error > terms.sq_err).all())

    # The directional term matters: without it the gradient is a different one (the issue measured cos 0.984).
    without = _official_loss(net, x, e, t, r, y, n_diffusion, use_dir_loss=False)
    g_without = _grads(without, net)
    assert (g_without - g_official).norm() > 1e-3 * g_official.norm()
    loss0, _ = _flowzoo_loss(create_objective("tim", net, directional_loss=0.0), x, e, t, r, y, dropped)
    assert (_grads(loss0, net) - g_without).norm() <= 1e-8 * g_without.norm()


def test_directional_error_by_hand_on_one_sample():
    """1 - cos over the C channels at each pixel, averaged over the H W pixels, in plain Python."""
    g = torch.Generator().manual_seed(5)
    a = torch.randn(1, C, H, W, generator=g, dtype=torch.float64)
    b = torch.randn(1, C, H, W, generator=g, dtype=torch.float64)
    total = 0.0
    for i in range(H):
        for j in range(W):
            pa = [float(a[0, c, i, j]) for c in range(C)]
            pb = [float(b[0, c, i, j]) for c in range(C)]
            dot = sum(p * q for p, q in zip(pa, pb))
            total += 1 - dot / (math.sqrt(sum(p * p for p in pa)) * math.sqrt(sum(q * q for q in pb)))
    assert directional_error(a, b).item() == pytest.approx(total / (H * W), rel=1e-13)
    # A flat sample is one vector; a sample equal to its target (or a positive multiple) has zero error.
    flat_a, flat_b = a.reshape(1, -1), b.reshape(1, -1)
    expected = 1 - float((flat_a * flat_b).sum() / (flat_a.norm() * flat_b.norm()))
    assert directional_error(flat_a, flat_b).item() == pytest.approx(expected, rel=1e-13)
    assert directional_error(a, 2.5 * a).abs().item() < 1e-15


def test_the_preset_defaults_are_the_imagenet_256_config():
    """configs/c2i/tim_xl_p2_256.yaml and trainer_c2i.py: OT_FM P_mean -0.4, P_std 1, sigma_d 1; diffusion_ratio 0.5,
    consistency_ratio 0.1, dde with epsilon 0.005, sqrt time weight on tangent times; adaptive eps 10e-6;
    class_dropout_prob 0.1; the derivative on the online model; use_dir_loss=True."""
    cfg = OBJECTIVES.get("tim").default_config
    assert cfg.time_sampler == {"name": "logit_normal", "mean": -0.4, "std": 1.0, "r_zero_ratio": 0.2}
    assert cfg.fm_ratio == 0.5 and cfg.alpha == 0.0 and cfg.shift == "data" and cfg.tangent == "shift"
    assert cfg.weighting == {"name": "tim", "sigma_d": 1.0, "c": 1e-5, "time": "sqrt", "tangent": True}
    assert cfg.jvp == {"name": "finite_difference", "eps": 0.005}
    assert cfg.label_dropout == 0.1 and cfg.target_network == "online" and cfg.directional_loss == 1.0


def test_tim_draws_have_the_official_marginals():
    """t = max of two sigmoid(N(-0.4, 1)) draws: P(t <= m) = Phi(logit m + 0.4)^2, median sigmoid(Phi^-1(0.5^0.5) - 0.4);
    the r < t, r > 0 rows' r = min: median sigmoid(-Phi^-1(0.5^0.5) - 0.4); r = t on exactly half the batch,
    r = 0 with r < t on a tenth, labels dropped on a tenth."""
    n = 20000
    objective = create_objective("tim", TinyConvNet())
    x = torch.zeros(n, C, H, W)
    y = torch.zeros(n, dtype=torch.long)
    drawn = objective.draw(x, y, 0, torch.Generator().manual_seed(0))
    t, r = drawn.t.double(), drawn.r.double()
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 ** 0.5, dtype=torch.float64))
    tolerance = 5 * math.sqrt(0.25 / n)  # 5 standard errors of an empirical CDF at its median
    assert abs((t <= torch.sigmoid(q - 0.4)).double().mean().item() - 0.5) < tolerance
    pair = (r < t) & (r > 0)
    m = int(pair.sum())
    assert abs((r[pair] <= torch.sigmoid(-q - 0.4)).double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / m)
    assert int((r == t).sum()) == n // 2
    p_zero = ((r == 0) & (r < t)).double().mean().item()
    assert abs(p_zero - 0.1) < 5 * math.sqrt(0.09 / n)
    p_drop = drawn.dropped.double().mean().item()
    assert abs(p_drop - 0.1) < 5 * math.sqrt(0.09 / n)


def test_guided_recipe_takes_the_difference_along_the_data_path_with_tangent_data():
    """tim_xl_p2_256_mg.yaml: v~ = v + 0.75 (F(c) - F(null)) at (z_t, t, t) for t in [0.3, 0.8], and
    F_target = v~ - (t - r) dF with dF along e - x (dde_derivative), not along v~. flowzoo: the cfg shift with
    tangent data (guidance network = the one target network here; TiM's is the EMA)."""
    net = _net(7)
    x, e, t, r, y, _, n_diffusion = _official_draws(20, 7, dropout=0.0)
    dropped = torch.zeros(20, dtype=torch.bool)
    shift = {"name": "cfg", "omega": 1.0, "kappa": 0.75, "t_min": 0.3, "t_max": 0.8, "drop_outside_interval": True}
    objective = create_objective("tim", net, shift=shift, tangent="data")
    _, terms = _flowzoo_loss(objective, x, e, t, r, y, dropped)
    b = lambda s: s[:, None, None, None]  # noqa: E731
    eps = 0.005
    with torch.no_grad():
        x_t = b(1 - t) * x + b(t) * e
        v = e - x
        null = torch.full_like(y, NUM_CLASSES)
        guided = ((t >= 0.3) & (t <= 0.8))
        assert guided.any() and (~guided).any()
        v_tilde = torch.where(b(guided), v + 0.75 * (net(x_t, t, 0 * t, y) - net(x_t, t, 0 * t, null)), v)
        path = lambda s: b(1 - s) * x + b(s) * e  # noqa: E731
        dF = (net(path(t + eps), t + eps, t + eps - r, y) - net(path(t - eps), t - eps, t - eps - r, y)) / (2 * eps)
        dF[:n_diffusion] = 0.0
        expected = v_tilde - b(t - r) * dF
    torch.testing.assert_close(terms.target.u_tgt, expected, rtol=0, atol=1e-12)
    # Along v~ instead (the tangent default) the target differs where the guidance acts on r < t rows.
    _, along_shift = _flowzoo_loss(create_objective("tim", net, shift=shift), x, e, t, r, y, dropped)
    assert (along_shift.target.u_tgt - expected).abs().max() > 1e-4


@pytest.mark.parametrize("name", [n for n in OBJECTIVES.names() if n != "tim"])
def test_directional_loss_zero_leaves_every_other_preset_untouched(name):
    """At the default 0 the loss is the weighted squared error to the bit, and the config (and its hash) reads
    the same: directional_loss is left out of to_dict."""
    builder = OBJECTIVES.get(name)
    config = getattr(builder, "default_config", None)
    if config is None:
        pytest.skip(f"{name} is a plugin without a unified-objective config")
    assert config.directional_loss == 0.0 and "directional_loss" not in config.to_dict()
    from tiny_nets import TinyVelocityNet

    torch.manual_seed(0)
    net = TinyVelocityNet().double()
    objective = create_objective(name, net, total_steps=100)
    if hasattr(objective, "set_target_network"):
        objective.set_target_network(net)
    x = torch.randn(16, 4, dtype=torch.float64)
    drawn = objective.draw(x, torch.randint(0, 3, (16,)), 0, torch.Generator().manual_seed(3))
    loss, terms = objective.loss_terms(x, drawn, 0)
    assert terms.error is terms.sq_err
    assert torch.equal(loss, (terms.weight * terms.sq_err).mean())
    assert torch.equal(objective.loss(x, drawn, 0)[1]["loss"], (terms.weight * terms.sq_err).mean())
