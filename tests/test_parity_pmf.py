"""pMF (issue 25): the `pmf` preset against pMF's own loss, written here from Lyy-iiis/pMF at 75f6073
(pmf.py pixelMeanFlow.forward, models/pmfDiT.py pmfDiT.__call__, configs/pMF_B_16_config.yml), and its
time and label-dropout draws against their closed forms.

pMF's equations, with c(t) = clip(t, 0.05, 1) and x^ the network's clean-data output:
    u(z, r, t) = (z - x^(z, t, t - r)) / c(t),   v_t = (z_t - x) / c(t)
    w = sg((z_t - x^_v(z_t, t, 0)) / c(t))       the tangent: predicted v (head-free here: the u-head at h = 0)
    (u, du/dt) = jvp(u, (z_t, t, r), (w, 1, 0)),  V = u + (t - r) sg(du/dt)
    S_b = sum (V - v_t)^2,  loss = mean_b S_b / sg(S_b + 0.01)
"""

from __future__ import annotations

import math
from statistics import NormalDist
from types import SimpleNamespace

import pytest
import torch
from torch.func import jvp

from flowzoo.backbones.prediction import DEFAULT_T_MIN, XPrediction
from flowzoo.config import ConfigError
from flowzoo.objectives import create_objective
from flowzoo.objectives.unified import DrawnBatch
from flowzoo.pipeline.run import build_network
from tiny_nets import TinyVelocityNet

torch.set_num_threads(1)

D, NULL = 4, 3
T_CLIP, NORM_EPS = 0.05, 0.01
P_MEAN, P_STD = 0.8, 0.8


def _inner(seed=0):
    torch.manual_seed(seed)
    return TinyVelocityNet(dim=D, num_classes=NULL).double()  # read as x^(z, t, h, y)


def _draws():
    """Rows 0-5 have r = t (pMF's first data_proportion rows), rows 6-11 r < t; several t < 0.05.
    Labels of rows 0-1 dropped, as cond_drop drops the first rows (which are r = t rows)."""
    g = torch.Generator().manual_seed(3)
    t = torch.tensor([0.01, 0.03, 0.2, 0.5, 0.9, 0.04, 0.02, 0.045, 0.3, 0.6, 0.95, 0.7], dtype=torch.float64)
    r = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.005, 0.0, 0.01, 0.25, 0.5, 0.69], dtype=torch.float64)
    fm = torch.arange(12) < 6
    r = torch.where(fm, t, r)
    b = t.shape[0]
    x = torch.randn(b, D, generator=g, dtype=torch.float64)
    e = torch.randn(b, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, NULL, (b,), generator=g)
    dropped = torch.arange(b) < 2
    return x, e, t, r, y, dropped, fm


def _official_pmf_loss(inner, x, e, t, r, y, dropped):
    """pMF's training loss at omega = 1 (no guidance input) without the v-head term, from its equations."""
    clip = lambda s: s.clamp(T_CLIP, 1.0)[:, None]  # noqa: E731
    y_dropped = torch.where(dropped, torch.full_like(y, NULL), y)
    z_t = (1 - t)[:, None] * x + t[:, None] * e
    v_t = (z_t - x) / clip(t)
    with torch.no_grad():  # predicted v at h = 0, conditioned on the label before dropout
        w = (z_t - inner(z_t, t, torch.zeros_like(t), y)) / clip(t)

    def u_fn(z, t_, r_):
        return (z - inner(z, t_, t_ - r_, y_dropped)) / clip(t_)

    u, du_dt = jvp(u_fn, (z_t, t, r), (w, torch.ones_like(t), torch.zeros_like(r)))
    big_v = u + (t - r)[:, None] * du_dt.detach()
    s = (big_v - v_t).pow(2).sum(1)
    return (s / (s + NORM_EPS).detach()).mean()


def _grad(loss, net):
    params = [p for p in net.parameters() if p.requires_grad]
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def _flowzoo_loss(objective, x, e, t, r, y, dropped, fm):
    labels = torch.where(dropped, torch.full_like(y, NULL), y)
    return objective.loss(x, DrawnBatch(e, t, r, labels, dropped, None, fm), 0)[0]


def test_pmf_gradient_equals_the_official_loss_gradient_on_identical_draws():
    inner = _inner()
    objective = create_objective("pmf", XPrediction(inner, t_min=T_CLIP))
    draws = _draws()
    x, e, t, r, y, dropped, fm = draws
    ours = _flowzoo_loss(objective, *draws)
    official = _official_pmf_loss(inner, x, e, t, r, y, dropped)
    torch.testing.assert_close(ours, official, rtol=1e-12, atol=0)
    g_ours, g_official = _grad(ours, inner), _grad(official, inner)
    assert (g_ours - g_official).norm() <= 1e-10 * g_official.norm()


def test_the_t_clip_matters_where_t_is_below_it():
    """Power check: flowzoo's former floor (1e-3, and the unclipped e - x anchor) gives another gradient."""
    inner = _inner()
    draws = _draws()
    x, e, t, r, y, dropped, fm = draws
    official = _grad(_official_pmf_loss(inner, x, e, t, r, y, dropped), inner)
    old = create_objective("pmf", XPrediction(inner, t_min=DEFAULT_T_MIN), shift="data")
    g_old = _grad(_flowzoo_loss(old, *draws), inner)
    assert (g_old - official).norm() > 1e-3 * official.norm()


def test_pmf_time_draws_and_label_dropout_follow_the_official_closed_forms():
    """sample_tr: t, r ~ sigmoid(N(0.8, 0.8)); r = t on the first half, then (max, min). So an r = t row's t
    is one draw (median sigmoid(0.8)); an r < t row's t is the larger of two, median
    sigmoid(0.8 + 0.8 Phi^-1(2^-1/2)), and its r the smaller, median sigmoid(0.8 + 0.8 Phi^-1(1 - 2^-1/2)).
    cond_drop: Binomial(B, 0.1) labels dropped, all on r = t rows: 0.1 of the batch, 0.2 of those rows.
    Each fraction below its closed-form median is 1/2 within 5 binomial standard errors."""
    n = 40_000
    objective = create_objective("pmf", XPrediction(_inner(), t_min=T_CLIP))
    x = torch.zeros(n, 1, dtype=torch.float64)
    y = torch.zeros(n, dtype=torch.long)
    drawn = objective.draw(x, y, 0, torch.Generator().manual_seed(0))
    fm = drawn.flow_matching_rows()
    assert int(fm.sum()) == n // 2
    assert torch.equal(drawn.r[fm], drawn.t[fm]) and bool((drawn.r[~fm] <= drawn.t[~fm]).all())

    sigmoid = lambda a: 1 / (1 + math.exp(-a))  # noqa: E731
    quantile = NormalDist().inv_cdf
    half = n // 2
    tol = 5 * math.sqrt(0.25 / half)
    medians = [
        (drawn.t[fm], sigmoid(P_MEAN)),
        (drawn.t[~fm], sigmoid(P_MEAN + P_STD * quantile(2 ** -0.5))),
        (drawn.r[~fm], sigmoid(P_MEAN + P_STD * quantile(1 - 2 ** -0.5))),
    ]
    for sample, median in medians:
        assert abs(float((sample < median).double().mean()) - 0.5) < tol, median

    dropped = drawn.dropped
    assert not bool(dropped[~fm].any())
    assert abs(float(dropped.double().mean()) - 0.1) < 5 * math.sqrt(0.09 / n)
    assert torch.equal(drawn.labels[dropped], torch.full_like(drawn.labels[dropped], NULL))


def test_x_prediction_floor_is_read_from_the_backbone_config():
    """backbone.prediction_t_min sets XPrediction's floor; without it the floor stays 1e-3 (earlier runs)."""
    data = SimpleNamespace(name="toy", sample_shape=(2,), num_classes=0)
    spec = {"name": "mlp", "width": 8, "depth": 1, "prediction": "x"}
    assert build_network(spec, data, 0).t_min == DEFAULT_T_MIN == 1e-3
    assert build_network({**spec, "prediction_t_min": 0.05}, data, 0).t_min == 0.05
    with pytest.raises(ConfigError, match="prediction_t_min must be a positive number"):
        build_network({**spec, "prediction_t_min": 0}, data, 0)
    from flowzoo.config import resolve

    assert resolve(objective="pmf")["backbone"]["prediction_t_min"] == T_CLIP
