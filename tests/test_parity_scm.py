"""The scm preset against NVlabs/rcm's sCM loss (rcm/models/t2v_model_distill_rcm.py, _student_scm_step,
commit 5b41aa9), with the data velocity in place of its teacher (sCT).

The reference below is written in TrigFlow variables from the official equations, independently of
flowzoo's linear-path target and weight: x_tau = cos(tau) x + sin(tau) e, the RectifiedFlow<->TrigFlow
preconditioning (c_in = c_skip = 1/(cos + sin), c_out = -sin/(cos + sin), network time sin/(cos + sin)),
F = (cos x_tau - x0) / sin, the JVP of F along (cos sin F_data, cos sin), g, its normalisation
g / (||g||_2 + 0.1), and the loss 100 ||F - sg(F) - g_n||^2 summed over elements and over the batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import jvp

from flowzoo.objectives import create_objective
from flowzoo.objectives.unified import DrawnBatch
from flowzoo.objectives.weighting import TangentNormalised, TrigFlowTangentNormalised

torch.set_num_threads(1)

B, SHAPE, CLASSES = 6, (2, 3), 3  # samples of 2 x 3 elements: the official sum runs over several dims
LOSS_SCALE, NORM_C = 100.0, 0.1  # rcm's loss_scale and the tangent normalisation's constant


class ShapedMLP(nn.Module):
    """net(z, t, h, y) on (B, 2, 3) samples: a smooth random network with every input mattering."""

    def __init__(self, width: int = 24):
        super().__init__()
        self.num_classes = CLASSES
        dim = math.prod(SHAPE)
        self.inp = nn.Linear(dim + 2, width)
        self.label = nn.Embedding(CLASSES + 1, width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, dim)

    def forward(self, z, t, h, y=None):
        a = torch.tanh(self.inp(torch.cat([z.flatten(1), t[:, None], h[:, None]], 1)) + self.label(y))
        return (self.out(torch.tanh(self.hidden(a)) * (1 + t[:, None] * h[:, None]))).view(z.shape)


def _draws(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, *SHAPE, generator=g, dtype=torch.float64)
    e = torch.randn(B, *SHAPE, generator=g, dtype=torch.float64)
    t = torch.sigmoid(torch.randn(B, generator=g, dtype=torch.float64) * 1.6 - 0.8)  # rcm's draw
    t[0], t[1] = 0.03, 0.97  # a near-data and a near-noise sample
    y = torch.randint(0, CLASSES, (B,), generator=g)
    return x, e, t, y


def _bc(a):
    return a.view(-1, *([1] * len(SHAPE)))


def _official_loss(net, x, e, t, y):
    """rcm's sCM student loss with F_teacher := cos(tau) e - sin(tau) x, summed over the batch (its trainer
    backpropagates loss_i.sum()); tangent_warmup 0 (warmup ratio 1), fd_type 0 (the JVP)."""
    tau = torch.arctan(t / (1 - t))  # rf_to_trig_time: sigma = t / (1 - t), tau = arctan(sigma)

    def F_of(x_tau, tau_):
        cos, sin = torch.cos(_bc(tau_)), torch.sin(_bc(tau_))
        c_skip = c_in = 1 / (cos + sin)
        c_out = -sin / (cos + sin)
        t_net = sin / (cos + sin)  # c_noise / 1000 (flowzoo feeds the time raw)
        out = net(x_tau * c_in, t_net.flatten(), t_net.flatten(), y)  # r = 0: h = t
        x0 = c_skip * x_tau + c_out * out
        return (cos * x_tau - x0) / sin

    cos, sin = torch.cos(_bc(tau)), torch.sin(_bc(tau))
    x_tau = cos * x + sin * e
    F_data = cos * e - sin * x
    with torch.no_grad():
        _, dF = jvp(F_of, (x_tau, tau), (cos * sin * F_data, torch.cos(tau) * torch.sin(tau)))
    F = F_of(x_tau, tau)
    F_sg = F.detach()
    ratio = 1.0
    g = -cos * torch.sqrt(1 - ratio**2 * sin**2) * (F_sg - F_data) - (ratio * cos * sin * x_tau + dF)
    g = g / (g.flatten(1).norm(dim=1).view_as(_bc(tau)) + NORM_C)
    per_sample = ((F - F_sg - g) ** 2).flatten(1).sum(1)
    return (LOSS_SCALE * per_sample).sum(), g


def _grads(loss, net):
    return torch.cat([p.flatten() for p in torch.autograd.grad(loss, list(net.parameters()))])


def _net(seed=0):
    torch.manual_seed(seed)
    return ShapedMLP().double()


def test_scm_gradient_equals_rcm_sct_gradient():
    """Same weights and draws: flowzoo's batch-mean loss times B has rcm's gradient to 1e-10 relative."""
    net = _net()
    x, e, t, y = _draws()
    official, _ = _official_loss(net, x, e, t, y)
    g_official = _grads(official, net)

    objective = create_objective("scm", net)
    drawn = DrawnBatch(e, t, torch.zeros_like(t), y, torch.zeros(B, dtype=torch.bool))
    loss, _ = objective.loss(x, drawn, 0)
    g_flowzoo = _grads(loss, net) * B  # rcm sums the per-sample losses over each GPU's batch

    rel = (g_flowzoo - g_official).norm() / g_official.norm()
    assert rel < 1e-10, rel
    # The weight before issue 25 (Delta normalised) is a different gradient, not a rescaling of it.
    old = create_objective("scm", net, weighting={"name": "tangent_normalised", "c": 0.1})
    g_old = _grads(old.loss(x, drawn, 0)[0], net)
    cos = torch.dot(g_old, g_official) / (g_old.norm() * g_official.norm())
    assert cos < 1 - 1e-6


def test_trigflow_weight_by_hand_at_one_sample():
    """w = S D cos(tau)/k^3 / (cos(tau)/k^2 ||Delta||_2 + c), k = cos tau + sin tau, at t = 0.3."""
    t = torch.tensor([0.3], dtype=torch.float64)
    delta = torch.tensor([[0.5, -1.0, 2.0, 0.25, 0.0, -0.75]], dtype=torch.float64)
    D = delta.shape[1]
    tau = math.atan(0.3 / 0.7)
    k = math.cos(tau) + math.sin(tau)
    norm = math.sqrt(0.25 + 1.0 + 4.0 + 0.0625 + 0.0 + 0.5625)
    by_hand = LOSS_SCALE * D * (math.cos(tau) / k**3) / (math.cos(tau) / k**2 * norm + 0.1)
    w = TrigFlowTangentNormalised()(t, delta.pow(2).mean(1), t, 0 * t, elements=D)
    assert abs(w.item() - by_hand) < 1e-12 * by_hand
    # and the g it normalises: ||g||_2 = cos(tau)/k^2 ||Delta||_2 (1/k^2 = dt/dtau at t = 0.3: 0.7^2 + 0.3^2)
    assert abs(math.cos(tau) / k**2 - 0.7 * math.sqrt(0.58)) < 1e-15


def test_normalised_tangent_is_g_over_its_norm():
    """In TrigFlow variables, rcm's g equals -cos(tau) Delta / k^2 with flowzoo's Delta = u - u_tgt."""
    net = _net(1)
    x, e, t, y = _draws(1)
    _, g_n = _official_loss(net, x, e, t, y)
    objective = create_objective("scm", net)
    drawn = DrawnBatch(e, t, torch.zeros_like(t), y, torch.zeros(B, dtype=torch.bool))
    _, terms = objective.loss_terms(x, drawn, 0)
    delta = (terms.pred - terms.target.u_tgt).detach()
    tau = torch.arctan(t / (1 - t))
    g = -_bc(torch.cos(tau) / (torch.cos(tau) + torch.sin(tau)) ** 2) * delta
    expected = g / (_bc(g.flatten(1).norm(dim=1)) + NORM_C)
    torch.testing.assert_close(g_n, expected, rtol=1e-10, atol=1e-13)


def test_scm_time_draw_is_rcm_lognormal_without_clip():
    """rcm: log(tan tau) ~ N(-0.8, 1.6), t = tan tau / (1 + tan tau); quartiles from the closed form."""
    objective = create_objective("scm", _net())
    assert objective.config.label_dropout == 0.0 and objective.config.time_sampler["t_min"] == 0.0
    n = 40_000
    x = torch.zeros(n, *SHAPE, dtype=torch.float64)
    drawn = objective.draw(x, torch.zeros(n, dtype=torch.long), 0, torch.Generator().manual_seed(0))
    assert (drawn.r == 0).all() and not drawn.dropped.any()
    q = 0.6744897501960817  # standard normal quartile
    for z, p in ((-q, 0.25), (0.0, 0.5), (q, 0.75), (-3.0, 0.0013498980316301)):
        quantile = 1 / (1 + math.exp(-(-0.8 + 1.6 * z)))
        frac = (drawn.t < quantile).double().mean().item()
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n), (z, frac, p)


def test_delta_normalised_option_keeps_its_gradient():
    """The named option tangent_normalised: gradient 2 Delta / (||Delta||_2 + c) at every t."""
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(B, 6, generator=g, dtype=torch.float64)
    pred = delta.clone().requires_grad_(True)
    sq = pred.pow(2).mean(1)
    ones = torch.ones(B, dtype=torch.float64)
    w = TangentNormalised(c=0.1)(ones, sq.detach(), 0.5 * ones, 0 * ones, elements=6)
    (w * sq).sum().backward()
    torch.testing.assert_close(pred.grad, 2 * delta / (delta.norm(dim=1, keepdim=True) + 0.1), rtol=1e-12, atol=0)
