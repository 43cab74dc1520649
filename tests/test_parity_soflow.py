"""The soflow preset against SoFlow's official training loss (issue 25), written out here from its code's
equations (zlab-princeton/SoFlow @ 3b60d60: models.py Soflow.get_velocity_loss, get_consistency_loss,
get_middle_time, get_cfg_decay_scale; train.py Learner.train; imagenet.yaml), in its own variables:
x_t = (1 - t) x_0 + t x_1, f(x, t, s) = x + (s - t) NN(x, t, s), s the target time, l the middle time.
Its time draws are checked against their closed-form marginals.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch

from flowzoo.objectives import create_objective
from flowzoo.objectives.schedules import build_schedule
from flowzoo.objectives.shift import GuidedDataVelocity, ShiftContext
from flowzoo.objectives.unified import DrawnBatch
from flowzoo.registry import TIME_SAMPLERS
from tiny_nets import TinyVelocityNet

torch.set_num_threads(1)

# imagenet.yaml
FM_SHARE, P, EPS = 0.75, 1.0, 0.01
TIME_MEAN, TIME_STD = (-0.2, -1.0, 0.2), (1.0, 0.8, 0.8)
CFG_SCALE, MIX, DROP, DECAY_TIME, DECAY_K = 3.0, 0.25, 0.1, 0.8, 0.025
RHO_START, RHO_END, GAP = 0.1, 0.002, 1e-4
STEPS = 1000
B, D = 400, 4


def _phi(x: float) -> float:
    return NormalDist().cdf(x)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# --- the official computation, from its equations -----------------------------------------------------

def _official_draws(seed: int):
    """train.py's draws, in float64: FM rows first (int(0.75 B)), then the consistency rows' (t, s)."""
    g = torch.Generator().manual_seed(seed)
    n_v = int(FM_SHARE * B)
    n_c = B - n_v
    x0 = torch.randn(B, D, generator=g, dtype=torch.float64)
    x1 = torch.randn(B, D, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (B,), generator=g)
    cfg_mask = torch.rand(B, generator=g, dtype=torch.float64) < DROP
    t_v = torch.sigmoid(torch.randn(n_v, generator=g, dtype=torch.float64) * TIME_STD[0] + TIME_MEAN[0])
    time1 = torch.sigmoid(torch.randn(n_c, generator=g, dtype=torch.float64) * TIME_STD[1] + TIME_MEAN[1])
    time2 = torch.sigmoid(torch.randn(n_c, generator=g, dtype=torch.float64) * TIME_STD[2] + TIME_MEAN[2])
    t_c = time2.clamp(min=GAP)
    s_c = torch.minimum(time1, t_c - GAP)
    return x0, x1, labels, cfg_mask, t_v, t_c, s_c


def _decay(t):
    """get_cfg_decay_scale: 1 up to the decay time, then 1 - exp(-k q / (1 - q)), q = (1 - t)/(1 - T)."""
    q = ((1 - t) / (1 - DECAY_TIME)).clamp(min=0, max=1 - 1e-6)
    return (t <= DECAY_TIME).double() + (t > DECAY_TIME).double() * (1 - torch.exp(-DECAY_K * (q / (1 - q))))


def _official_loss(net, draws, rho, consistency_factor=1.0, decay=True):
    """loss = L_vel n_v / B + L_con n_c / B with SoFlow's two losses; NN(x, t, s, y) = net(x, t, t - s, y)."""
    x0, x1, labels, cfg_mask, t_v, t_c, s_c = draws
    n_v = t_v.numel()
    null = net.num_classes

    def NN(x, t, s, y):
        return net(x, t, t - s, y)

    def col(a):
        return a[:, None]

    def guided(x_t, t, v_t, y, mask):
        with torch.no_grad():
            d = _decay(t) if decay else torch.ones_like(t)
            v_uncond = NN(x_t, t, t, torch.full_like(y, null))
            v_g = v_t + col(d) * (CFG_SCALE - 1) * (v_t - v_uncond)
            v_g = MIX * v_g + (1 - MIX) * NN(x_t, t, t, y)  # the conditional velocity, undropped label
            return torch.where(col(mask), v_t, v_g)

    # velocity loss (get_velocity_loss)
    x0v, x1v, yv, mv = x0[:n_v], x1[:n_v], labels[:n_v], cfg_mask[:n_v]
    x_t = col(1 - t_v) * x0v + col(t_v) * x1v
    v_t = x1v - x0v
    y_masked = torch.where(mv, null, yv)
    v_pred = NN(x_t, t_v, t_v, y_masked)
    delta = v_pred - guided(x_t, t_v, v_t, yv, mv)
    w = 1.0 / (delta.pow(2).mean(1) + EPS).pow(P)
    velocity_loss = (w.detach() * delta.pow(2).mean(1)).mean()

    # consistency loss (get_consistency_loss), l from get_middle_time ('Exponent') and train.py's min gap
    x0c, x1c, yc, mc = x0[n_v:], x1[n_v:], labels[n_v:], cfg_mask[n_v:]
    t, s = t_c, s_c
    l = torch.minimum(t + (s - t) * rho, t - GAP)
    x_t = col(1 - t) * x0c + col(t) * x1c
    v_t = x1c - x0c
    y_masked = torch.where(mc, null, yc)
    v_masked = guided(x_t, t, v_t, yc, mc)
    NN_t = NN(x_t, t, s, y_masked)
    f_t = x_t + col(s - t) * NN_t
    with torch.no_grad():
        x_l = x_t + v_masked * col(l - t)
        f_l = x_l + col(s - l) * NN(x_l, l, s, y_masked)
        dq = (f_t - f_l) / col(t - l)
        w = 1.0 / (dq.pow(2).mean(1) + EPS).pow(P)
    consistency_loss = (torch.sign(s - t) * (NN_t * dq * col(w)).mean(1)).mean()

    n_c = B - n_v
    return velocity_loss * (n_v / B) + consistency_factor * consistency_loss * (n_c / B)


# --- flowzoo on the same draws ---------------------------------------------------------------------------

def _flowzoo_loss(net, draws, step, **overrides):
    x0, x1, labels, cfg_mask, t_v, t_c, s_c = draws
    objective = create_objective("soflow", net, total_steps=STEPS, **overrides)
    t = torch.cat([t_v, t_c])
    r = torch.cat([t_v, s_c])
    fm = torch.arange(B) < t_v.numel()
    dropped_labels = torch.where(cfg_mask, net.num_classes, labels)
    drawn = DrawnBatch(x1, t, r, dropped_labels, cfg_mask, None, fm)
    loss, _ = objective.loss(x0, drawn, step)
    return loss


def _grad(loss, net):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(net.parameters()))])


def _net():
    torch.manual_seed(0)
    return TinyVelocityNet(dim=D).double()


@pytest.mark.parametrize("step, rho", [(0, RHO_START), (STEPS, RHO_END), (STEPS // 2, math.sqrt(RHO_START * RHO_END))])
def test_gradient_equals_the_official_soflow_loss_gradient(step, rho):
    net = _net()
    draws = _official_draws(seed=1)
    _, _, _, cfg_mask, t_v, t_c, s_c = draws
    # the draws exercise every branch: collapsed pairs, the min-gap clamp, CFG decay, dropped labels
    assert int((s_c == t_c - GAP).sum()) >= 5
    assert int(((t_c - s_c) * rho < GAP).sum()) > int((s_c == t_c - GAP).sum()) or rho == RHO_START
    assert int((torch.cat([t_v, t_c]) > DECAY_TIME).sum()) >= 5 and int(cfg_mask.sum()) >= 10
    official = _grad(_official_loss(net, draws, rho), net)
    ours = _grad(_flowzoo_loss(net, draws, step), net)
    assert float((ours - official).abs().max() / official.abs().max()) < 1e-10


def test_the_gradient_check_sees_each_part():
    """The comparison has power: dropping the CFG decay, the consistency term's 1/2, or the min gap (the
    collapse of r > t pairs) moves the gradient."""
    net = _net()
    draws = _official_draws(seed=1)
    official = _grad(_official_loss(net, draws, RHO_END), net)
    ours = _grad(_flowzoo_loss(net, draws, STEPS), net)
    for variant in (dict(decay=False), dict(consistency_factor=2.0)):
        other = _grad(_official_loss(net, draws, RHO_END, **variant), net)
        assert float((ours - other).abs().max() / other.abs().max()) > 1e-4
    no_gap = {"name": "exponential", "start": RHO_START, "end": RHO_END, "start_frac": 0.0, "end_frac": 1.0}
    other = _grad(_flowzoo_loss(net, draws, STEPS, alpha=no_gap), net)
    # small (1.4e-6 here): a pair 1e-4 apart is flow matching up to O(1e-4) either way; far above 1e-13
    assert float((other - official).abs().max() / official.abs().max()) > 1e-8


def test_named_option_consistency_scale_one_is_the_squared_form():
    """consistency_scale 1 (flowzoo's earlier weighting) doubles the consistency term: the MSE form of dq."""
    net = _net()
    draws = _official_draws(seed=2)
    weighting = {"name": "inverse_alpha_adaptive", "c": EPS, "p": P, "consistency_scale": 1.0}
    ours = _grad(_flowzoo_loss(net, draws, 0, weighting=weighting), net)
    official = _grad(_official_loss(net, draws, RHO_START, consistency_factor=2.0), net)
    assert float((ours - official).abs().max() / official.abs().max()) < 1e-10


def test_cfg_decay_is_the_official_guided_velocity():
    """v~ = MIX (v + d(t) (w - 1)(v - u(null))) + (1 - MIX) u(c) at (z_t, t, t), d from get_cfg_decay_scale."""
    net = _net()
    t = torch.tensor([0.3, 0.8, 0.8001, 0.85, 0.9, 0.97, 0.999], dtype=torch.float64)
    n = t.numel()
    g = torch.Generator().manual_seed(3)
    z = torch.randn(n, D, generator=g, dtype=torch.float64)
    v = torch.randn(n, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    shift = GuidedDataVelocity(omega=MIX * CFG_SCALE, kappa=1 - MIX, dropped="data", decay_time=DECAY_TIME)
    dropped = torch.zeros(n, dtype=torch.bool)
    with torch.no_grad():
        got = shift(ShiftContext(z, t, t, t, v, y, dropped, net.num_classes, net))
        u_null = net(z, t, torch.zeros_like(t), torch.full_like(y, net.num_classes))
        u_c = net(z, t, torch.zeros_like(t), y)
        d = _decay(t)[:, None]
        expected = MIX * (v + d * (CFG_SCALE - 1) * (v - u_null)) + (1 - MIX) * u_c
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)
    assert float(d[0]) == 1.0 and float(d[-1]) < 0.1  # full guidance at t <= 0.8, nearly none at t -> 1


def test_min_gap_alpha_is_the_official_middle_time():
    """alpha = (t - l) / (t - s) with l = min(t + (s - t) rho, t - 1e-4); a collapsed pair gets alpha = 1."""
    schedule = build_schedule({"name": "exponential", "start": RHO_START, "end": RHO_END, "min_gap": GAP},
                              total_steps=STEPS)
    t = torch.tensor([0.5, 0.5, 0.5, 0.9, 0.3], dtype=torch.float64)
    s = torch.tensor([0.1, 0.49, 0.4999, 0.9 - GAP, 0.3 - 0.04], dtype=torch.float64)
    for step in (0, STEPS):
        rho = schedule.value(step)
        l = torch.minimum(t + (s - t) * rho, t - GAP)
        torch.testing.assert_close(schedule.per_sample(step, t, s), (t - l) / (t - s), rtol=1e-12, atol=0)
    # float32 times: t - fl(t - 1e-4) is 1e-4 only up to rounding; the pair still collapses exactly
    t32 = torch.tensor([0.3, 0.7, 0.99], dtype=torch.float32)
    r32 = t32 - GAP
    assert torch.all(schedule.per_sample(STEPS, t32.double(), r32.double()) == 1.0)


# --- time draws: marginals against closed forms -------------------------------------------------------

def _within(fraction: float, expected: float, n: int, sigmas: float = 5.0) -> bool:
    return abs(fraction - expected) <= sigmas * math.sqrt(expected * (1 - expected) / n)


def test_soflow_pairs_follow_their_closed_form_marginals():
    n = 400_000
    sampler = TIME_SAMPLERS.build({"name": "soflow"})
    t, r = sampler(n, generator=torch.Generator().manual_seed(0))
    assert torch.all(t >= GAP) and torch.all(r >= 0)
    gap = (t - r).double()
    assert torch.all(gap >= GAP * (1 - 1e-3))  # r <= t - 1e-4, up to float32 rounding
    # collapsed pairs: the r draw lands at or above t - 1e-4; P(N(-1, .8) > N(.2, .8)) = Phi(-1.2 / (.8 sqrt 2))
    collapsed = float((gap <= GAP * (1 + 1e-3)).double().mean())
    expected = _phi(-(TIME_MEAN[2] - TIME_MEAN[1]) / math.hypot(TIME_STD[1], TIME_STD[2]))
    assert expected == pytest.approx(0.1444, abs=1e-4)
    assert _within(collapsed, expected, n)
    # median of t: sigmoid(0.2)
    assert _within(float((t <= torch.sigmoid(torch.tensor(TIME_MEAN[2]))).double().mean()), 0.5, n)
    # P(r <= x) = 1 - P(r draw > x) P(t > x + 1e-4), at x = sigmoid(-1) (the r draw's median)
    x = 1 / (1 + math.exp(-TIME_MEAN[1]))
    p_r = 1 - 0.5 * (1 - _phi((_logit(x + GAP) - TIME_MEAN[2]) / TIME_STD[2]))
    assert _within(float((r <= x).double().mean()), p_r, n)


def test_named_option_sorted_pairs_give_the_flow_matching_rows_the_larger_draw():
    """time_sampler logit_normal(-0.4, 1) with fm_times null (the zoo's one time density): r = t rows take
    the max of two draws, median sigmoid(-0.4 + Phi^-1(sqrt(1/2))) = 0.536."""
    n = 40_000
    objective = create_objective("soflow", TinyVelocityNet(dim=D), total_steps=STEPS, fm_times=None,
                                 time_sampler={"name": "logit_normal", "mean": -0.4, "std": 1.0})
    drawn = objective.draw(torch.zeros(n, D), None, step=0, generator=torch.Generator().manual_seed(0))
    fm = drawn.r == drawn.t
    assert int(fm.sum()) == round(FM_SHARE * n)
    median = 1 / (1 + math.exp(0.4 - NormalDist().inv_cdf(math.sqrt(0.5))))
    assert median == pytest.approx(0.536, abs=1e-3)
    assert _within(float((drawn.t[fm] <= median).double().mean()), 0.5, int(fm.sum()))


def test_objective_draws_flow_matching_rows_from_their_own_density():
    """r = t on exactly round(0.75 B) rows, whose t has median sigmoid(-0.2); the others are SoFlow pairs;
    labels drop with probability 0.1 at every t (no guidance interval)."""
    n = 40_000
    net = TinyVelocityNet(dim=D)
    objective = create_objective("soflow", net, total_steps=STEPS)
    x = torch.zeros(n, D)
    y = torch.zeros(n, dtype=torch.long)
    drawn = objective.draw(x, y, step=0, generator=torch.Generator().manual_seed(0))
    fm = drawn.fm
    assert int(fm.sum()) == round(FM_SHARE * n) and torch.all(drawn.r[fm] == drawn.t[fm])
    assert torch.all(drawn.r[~fm] < drawn.t[~fm])
    n_fm, n_c = int(fm.sum()), int((~fm).sum())
    median_fm = 1 / (1 + math.exp(-TIME_MEAN[0]))
    assert _within(float((drawn.t[fm] <= median_fm).double().mean()), 0.5, n_fm)
    median_c = 1 / (1 + math.exp(-TIME_MEAN[2]))
    assert _within(float((drawn.t[~fm] <= median_c).double().mean()), 0.5, n_c)
    collapsed = float(((drawn.t - drawn.r)[~fm].double() <= GAP * (1 + 1e-3)).double().mean())
    assert _within(collapsed, _phi(-1.2 / math.hypot(0.8, 0.8)), n_c)
    assert _within(float(drawn.dropped.double().mean()), DROP, n)
