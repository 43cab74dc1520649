"""The ``ect`` preset computes what ECT's official training loss computes (issue 25).

ECT: Geng et al. 2024, "Consistency Models Made Easy"; locuslab/ect @ 4311059, training/loss.py ECMLoss.
Each test recomputes ECT's quantities here from its equations in EDM's variables (sigma, c_skip, c_out,
D), independently of flowzoo's x0 form, and compares:

1. the parameter gradient of flowzoo's ``ect`` objective with that of ECT's per-sample loss
   (sqrt(||D_t - D_r||^2 + c^2) - c) / (sigma_t - sigma_r), batch-mean, on the same draws (float64);
2. ECT's r(t) mapping over its stages, worked by hand at a few points;
3. the t draw's median against its closed form sigmoid(P_mean).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flowzoo.objectives import create_objective
from flowzoo.registry import SCHEDULES, TIME_SAMPLERS, WEIGHTINGS

torch.set_num_threads(1)

SIGMA_DATA = 0.5  # ECMPrecond's sigma_data
B, DIM, TOTAL_STEPS = 64, 4, 800  # 8 stages of 100 steps


class RawNet(nn.Module):
    """ECT's F(c_in x, c_noise): a tiny MLP, the only thing with parameters."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(DIM + 1, 32)
        self.out = nn.Linear(32, DIM)

    def forward(self, x_in, c_noise):
        return self.out(torch.tanh(self.inp(torch.cat([x_in, c_noise[:, None]], dim=1))))


def edm_denoiser(raw: RawNet, x_sigma, sigma):
    """ECMPrecond in training mode: D = c_skip x + c_out F(c_in x, ln(sigma) / 4)."""
    s = sigma[:, None]
    c_skip = SIGMA_DATA**2 / (s**2 + SIGMA_DATA**2)
    c_out = s * SIGMA_DATA / (s**2 + SIGMA_DATA**2).sqrt()
    c_in = 1 / (s**2 + SIGMA_DATA**2).sqrt()
    return c_skip * x_sigma + c_out * raw(c_in * x_sigma, sigma.log() / 4)


class EDMVelocity(nn.Module):
    """The same denoiser as a flowzoo backbone: u(z, 0, t) = (z - D(z / (1 - t), t / (1 - t))) / t, so that
    flowzoo's f(z_t, t) = z_t - t u is ECT's D (r = 0 only, which is all the ect preset asks for)."""

    def __init__(self, raw: RawNet):
        super().__init__()
        self.raw = raw
        self.sample_shape = (DIM,)

    def forward(self, z, t, h, y=None):
        assert torch.equal(h, t), "r = 0 on every sample"
        one_minus_t = (1 - t)[:, None]
        return (z - edm_denoiser(self.raw, z / one_minus_t, t / (1 - t))) / t[:, None]


def ect_sigma_r(sigma, stage, q=2.0, k=8.0, b=1.0):
    """ECMLoss.t_to_r_sigmoid at update_schedule(stage)."""
    decay = 1 / q ** (stage + 1)
    return (sigma * (1 - decay * (1 + k * torch.sigmoid(-b * sigma)))).clamp(min=0)


def ect_loss(raw, x, e, sigma, stage, c):
    """ECMLoss.__call__'s loss, batch-mean as ct_training_loop.py takes it."""
    sigma_r = ect_sigma_r(sigma, stage)
    d_t = edm_denoiser(raw, x + sigma[:, None] * e, sigma)
    with torch.no_grad():
        on = sigma_r > 0
        d_r = x.clone()  # ECT's boundary: where r = 0 the target is the data itself
        d_r[on] = edm_denoiser(raw, x[on] + sigma_r[on, None] * e[on], sigma_r[on])
    sq = (d_t - d_r).pow(2).sum(1)
    per_sample = (sq + c**2).sqrt() - c if c > 0 else sq.sqrt()
    return (per_sample / (sigma - sigma_r)).mean(), sigma_r


def _flat_grad(module):
    return torch.cat([p.grad.flatten() for p in module.parameters()])


@pytest.mark.parametrize("step,c", [(0, 0.0), (250, 0.0), (750, 0.0), (250, 0.05)])
def test_gradient_equals_ects_loss_gradient_on_the_same_draws(step, c):
    torch.manual_seed(0)
    raw = RawNet().double()
    net = EDMVelocity(raw)
    overrides = {} if c == 0 else {"weighting": {"name": "ect", "c": c}}
    objective = create_objective("ect", net, total_steps=TOTAL_STEPS, **overrides)
    x = SIGMA_DATA * 2 * torch.randn(B, DIM, dtype=torch.float64)
    drawn = objective.draw(x, None, step, torch.Generator().manual_seed(1))
    assert torch.equal(drawn.r, torch.zeros_like(drawn.r))

    raw.zero_grad()
    loss, _ = objective.loss(x, drawn, step)
    loss.backward()
    flowzoo_grad = _flat_grad(raw).clone()

    raw.zero_grad()
    sigma = drawn.t / (1 - drawn.t)  # the same t, in EDM's noise level
    reference, sigma_r = ect_loss(raw, x, drawn.noise, sigma, step // (TOTAL_STEPS // 8), c)
    reference.backward()
    ect_grad = _flat_grad(raw)

    if step == 0:  # ECT's boundary branch (r clamped to 0, target = data) is exercised, and the other one
        assert (sigma_r == 0).any() and (sigma_r > 0).any()
    assert ect_grad.norm() > 0
    assert (flowzoo_grad - ect_grad).abs().max() <= 1e-10 * ect_grad.abs().max()


def test_the_weight_has_the_unsquared_norms_gradient_and_is_zero_without_a_direction():
    """w m has the gradient of L = ||D_t - D_r|| / (sigma_t - sigma_s), checked per sample with autograd on L
    itself; where Delta = 0 (and c = 0) the weight is 0, not inf or nan."""
    g = torch.Generator().manual_seed(3)
    t = torch.rand(6, generator=g, dtype=torch.float64) * 0.9 + 0.05
    alpha = torch.rand(6, generator=g, dtype=torch.float64) * 0.9 + 0.05
    r = torch.zeros_like(t)
    delta = torch.randn(6, DIM, generator=g, dtype=torch.float64, requires_grad=True)
    s = (1 - alpha) * t
    sigma_gap = t / (1 - t) - s / (1 - s)
    norm = (t[:, None] * delta).pow(2).sum(1).sqrt()  # ||f_t - f_s||, f = z - t u
    (grad_l,) = torch.autograd.grad((norm / sigma_gap).sum(), delta)
    weight = WEIGHTINGS.build({"name": "ect"})(alpha, delta.detach().pow(2).mean(1), t, r, elements=DIM)
    (grad_w,) = torch.autograd.grad((weight * delta.pow(2).mean(1)).sum(), delta)
    torch.testing.assert_close(grad_w, grad_l, rtol=1e-12, atol=0)

    zero = WEIGHTINGS.build({"name": "ect"})(alpha, torch.zeros(6, dtype=torch.float64), t, r, elements=DIM)
    assert torch.equal(zero, torch.zeros_like(zero))


def _alpha_by_hand(t: float, stage: int, q=2.0, k=8.0, b=1.0) -> float:
    """Through EDM's variables: sigma, ECT's sigma_r, back to the path time s, alpha = (t - s) / t."""
    sigma = t / (1 - t)
    ratio = 1 - q ** -(stage + 1) * (1 + k / (1 + math.exp(b * sigma)))
    sigma_r = max(sigma * ratio, 0.0)
    s = sigma_r / (1 + sigma_r)
    return (t - s) / t


def test_ect_mapping_by_hand():
    sched = SCHEDULES.build({"name": "ect"}, total_steps=TOTAL_STEPS)
    assert sched.stage_steps == 100
    # t = 1/2 is sigma = 1; at stage 2: a = (1 + 8 sigmoid(-1)) / 8 = 0.39394, sigma_r = 0.60606,
    # s = 0.37736, alpha = 0.24528.
    t = torch.tensor([0.5], dtype=torch.float64)
    assert sched.per_sample(250, t, torch.zeros_like(t)).item() == pytest.approx(0.2452846, abs=1e-7)
    points = [(0.01, 0), (0.2, 0), (0.6, 0), (0.05, 2), (0.5, 2), (0.9, 2), (0.99, 2), (0.3, 7), (0.95, 7)]
    for t_value, stage in points:
        t = torch.tensor([t_value], dtype=torch.float64)
        got = sched.per_sample(stage * 100 + 50, t, torch.zeros_like(t)).item()
        assert got == pytest.approx(_alpha_by_hand(t_value, stage), rel=1e-12), (t_value, stage)
    # sigma <= ln 7 at stage 0 gives a >= 1: ECT clamps r to 0, i.e. alpha = 1 (the data target).
    assert _alpha_by_hand(0.2, 0) == 1.0
    # Stage 2 spans alpha 0.62 (t -> 0) down toward 0 (t -> 1), not ct_discrete's 0.40-0.62.
    assert _alpha_by_hand(1e-6, 2) == pytest.approx(0.625, abs=1e-5) and _alpha_by_hand(0.99, 2) < 0.002
    # The stage: step // stage_steps, held at the last of the run's 8 stages past its end.
    assert [sched.value(k) for k in (0, 99, 100, 799, 5000)] == [0.5, 0.5, 0.25, 2.0**-8, 2.0**-8]
    one_hour = SCHEDULES.build({"name": "ect", "q": 256.0, "stages": 1}, total_steps=TOTAL_STEPS)
    assert one_hour.value(0) == one_hour.value(10 * TOTAL_STEPS) == 1 / 256


def test_t_draw_is_ects_lognormal_sigma():
    """sigma = exp(N(-1.1, 2.0)): median t = sigmoid(-1.1), and P(ln sigma < P_mean + P_std) = Phi(1)."""
    n = 100_000
    t, r = TIME_SAMPLERS.build({"name": "lognormal_sigma"})(n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r, torch.zeros_like(r))
    median = 1 / (1 + math.exp(1.1))
    # Sample median's sd: 1 / (2 f(m) sqrt(n)), f the density of t at its median, phi(0) / (P_std m (1 - m)).
    density = 1 / math.sqrt(2 * math.pi) / (2.0 * median * (1 - median))
    assert abs(t.double().median().item() - median) < 5 / (2 * density * math.sqrt(n))
    sigma = t.double() / (1 - t.double())
    below = (sigma.log() < -1.1 + 2.0).double().mean().item()
    phi1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    assert abs(below - phi1) < 5 * math.sqrt(phi1 * (1 - phi1) / n)
