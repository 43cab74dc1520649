"""The objective's parts against their formulas: JVP backends, schedules, CFG, dropout, fm_ratio."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from flowzoo.objectives import create_objective
from flowzoo.objectives.jvp import get_jvp_backend
from flowzoo.objectives.schedules import build_schedule
from flowzoo.objectives.shift import GuidedDataVelocity, ShiftContext
from flowzoo.objectives.time_samplers import apply_fm_ratio
from flowzoo.objectives.velocity import ConditionedVelocity
from flowzoo.registry import JVP_BACKENDS, OBJECTIVES, SCHEDULES, TIME_SAMPLERS
from tiny_nets import TinyAttentionNet, TinyVelocityNet


def _fd64(u, z, r, t, v, eps=1e-6):
    with torch.no_grad():
        return (u(z + eps * v, r, t + eps) - u(z - eps * v, r, t - eps)) / (2 * eps)


@pytest.mark.parametrize("net_cls", [TinyVelocityNet, TinyAttentionNet])
def test_jvp_backends_agree_with_each_other_and_a_float64_finite_difference(net_cls):
    torch.manual_seed(0)
    net = net_cls()
    B = 8
    z = torch.randn(B, *net.sample_shape)
    v = torch.randn_like(z)
    t = torch.rand(B) * 0.8 + 0.1
    r = t * torch.rand(B)
    y = torch.randint(0, 3, (B,))
    u = ConditionedVelocity(net, y)
    results = {name: get_jvp_backend(name)(u, z, r, t, v)[1] for name in JVP_BACKENDS.names()}
    net64 = net_cls().double()
    net64.load_state_dict(net.state_dict())
    reference = _fd64(ConditionedVelocity(net64, y), z.double(), r.double(), t.double(), v.double()).float()
    scale = reference.abs().max()
    for name, d in results.items():
        err = float((d - reference).abs().max() / scale)
        print(f"{net_cls.__name__} {name}: max relative deviation from float64 FD = {err:.2e}")
        tol = 5e-3 if name == "finite_difference" else 1e-5
        assert err < tol, name
    torch.testing.assert_close(results["forward"], results["double_backward"], rtol=1e-5, atol=1e-6)


def test_fused_attention_has_no_forward_ad_outside_the_jvp_scope():
    """Why the math-kernel fallback exists: the fused CPU kernel refuses forward-mode AD."""
    q = torch.randn(2, 1, 4, 8)
    try:
        torch.func.jvp(lambda a: F.scaled_dot_product_attention(a, a, a), (q,), (q,))
    except (NotImplementedError, RuntimeError):
        pass  # expected on builds whose default kernel is fused
    # ... while inside the backend's scope the same network differentiates fine.
    net = TinyAttentionNet()
    z = torch.randn(2, *net.sample_shape)
    t = torch.full((2,), 0.5)
    out, d = get_jvp_backend("forward")(ConditionedVelocity(net, None), z, t * 0, t, torch.randn_like(z))
    assert torch.isfinite(d).all() and out.shape == z.shape


def test_jvp_leaves_no_graph_to_the_parameters():
    net = TinyVelocityNet()
    z = torch.randn(4, 4)
    t = torch.full((4,), 0.6)
    for name in JVP_BACKENDS.names():
        _, d = get_jvp_backend(name)(ConditionedVelocity(net, None), z, t * 0.5, t, torch.randn_like(z))
        assert not d.requires_grad, name


def test_sigmoid_schedule_is_exactly_one_then_exactly_zero():
    k_s, k_e = 1000, 5000
    sched = build_schedule({"name": "sigmoid", "k_s": k_s, "k_e": k_e})
    mid, width = 0.5 * (k_s + k_e), 0.212 * (k_e - k_s)
    assert all(sched.value(k) == 1.0 for k in range(0, int(mid - width)))
    assert all(sched.value(k) == 0.0 for k in range(int(mid + width) + 1, 2 * k_e))
    assert 0 < sched.value(int(mid)) < 1
    assert sched.value(int(mid)) == pytest.approx(0.5, abs=1e-3)
    # the clamp boundary is ln((1 - eta)/eta)/gamma of the window from the middle
    w = math.log((1 - 5e-3) / 5e-3) / 25
    assert sched.value(int(mid - w * (k_e - k_s)) + 2) < 1.0
    values = [sched.value(k) for k in range(0, 2 * k_e, 7)]
    assert all(a >= b for a, b in zip(values, values[1:])), "alpha must not increase"


def test_sigmoid_schedule_over_the_whole_run_from_fractions():
    sched = build_schedule({"name": "sigmoid", "start_frac": 0.0, "end_frac": 1.0}, total_steps=400_000)
    assert (sched.k_s, sched.k_e) == (0.0, 400_000.0)


@pytest.mark.parametrize(
    "spec, checks",
    [
        (0.3, [(0, 0.3), (10**6, 0.3)]),
        ({"name": "step", "before": 1.0, "after": 0.0, "k": 10}, [(9, 1.0), (10, 0.0)]),
        ({"name": "linear", "start": 1.0, "end": 0.0, "k_s": 0, "k_e": 100}, [(0, 1.0), (25, 0.75), (200, 0.0)]),
        ({"name": "cosine", "start": 1.0, "end": 0.0, "k_s": 0, "k_e": 100}, [(0, 1.0), (50, 0.5), (100, 0.0)]),
    ],
)
def test_simple_schedules_match_their_formulas(spec, checks):
    sched = build_schedule(spec)
    for step, expected in checks:
        assert sched.value(step) == pytest.approx(expected)


def test_ct_discretisation_alpha_matches_ect_and_shrinks_by_q_per_stage():
    sched = build_schedule({"name": "ct_discrete", "q": 2.0, "k": 8.0, "b": 1.0, "stage_steps": 10})
    t = torch.tensor([0.2, 0.9])
    expected = 0.25 * (1 + 8 * torch.sigmoid(-t))  # stage 1: q^-(1+1)
    torch.testing.assert_close(sched.per_sample(15, t, torch.zeros_like(t)), expected.clamp(max=1))
    assert sched.value(35) == pytest.approx(sched.value(5) / 8)


@pytest.mark.parametrize("name", TIME_SAMPLERS.names())
def test_time_samplers_give_ordered_pairs_in_the_unit_interval(name):
    t, r = TIME_SAMPLERS.build(name)(4096, generator=torch.Generator().manual_seed(0))
    assert t.shape == r.shape == (4096,)
    assert torch.all((0 <= r) & (r <= t) & (t <= 1))


def test_logit_normal_pairs_follow_their_distribution():
    t, r = TIME_SAMPLERS.build({"name": "logit_normal", "mean": -0.4, "std": 1.0})(200_000, generator=torch.Generator().manual_seed(0))
    both = torch.cat([t, r])
    logits = torch.log(both / (1 - both))
    assert float(logits.mean()) == pytest.approx(-0.4, abs=0.01)
    assert float(logits.std()) == pytest.approx(1.0, abs=0.01)


def test_dyadic_grid_steps_are_powers_of_two_on_their_grid():
    t, r = TIME_SAMPLERS.build({"name": "dyadic", "levels": 6})(4096, generator=torch.Generator().manual_seed(0))
    h = t - r
    k = -torch.log2(h)
    assert torch.allclose(k, k.round()) and k.min() >= 0 and k.max() <= 6
    assert torch.allclose(t / h, (t / h).round(), atol=1e-4)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_fm_ratio_split_sets_r_equal_t_on_exactly_that_fraction(ratio):
    t = torch.rand(64) * 0.5 + 0.5
    r = t * 0.5
    t2, r2 = apply_fm_ratio(t, r, ratio, generator=torch.Generator().manual_seed(0))
    assert int((r2 == t2).sum()) == round(ratio * 64)
    assert torch.all((r2 == t2) | (r2 == r))


def test_label_dropout_rate_matches_its_probability():
    net = TinyVelocityNet(num_classes=10)
    objective = create_objective("meanflow", net, label_dropout=0.1)
    y = torch.randint(0, 10, (100_000,))
    labels, dropped = objective.drop_labels(y, y.shape[0], torch.Generator().manual_seed(0), y.device)
    assert float(dropped.float().mean()) == pytest.approx(0.1, abs=0.003)
    assert torch.all(labels[dropped] == 10) and torch.equal(labels[~dropped], y[~dropped])


def test_cfg_shift_mixes_by_its_formula_inside_the_time_window_only():
    torch.manual_seed(0)
    net = TinyVelocityNet()
    B = 32
    z = torch.randn(B, 4)
    v = torch.randn(B, 4)
    t = torch.linspace(0.01, 0.99, B)
    y = torch.randint(0, 3, (B,))
    dropped = torch.zeros(B, dtype=torch.bool)
    dropped[::5] = True
    labels = torch.where(dropped, torch.full_like(y, 3), y)
    omega, kappa = 0.2, 0.5
    # dropped="data": the named non-default choice (dropped labels train on v); the official default, the
    # guided mix for dropped labels too, is checked in test_official_parity.py
    shift = GuidedDataVelocity(omega=omega, kappa=kappa, t_min=0.2, t_max=0.8, dropped="data")
    ctx = ShiftContext(z, t * 0.5, t, t, v, labels, dropped, 3, net)
    with torch.no_grad():
        v_shift = shift(ctx)
        u_c = net(z, t, torch.zeros_like(t), labels)
        u_null = net(z, t, torch.zeros_like(t), torch.full_like(y, 3))
    inside = (t > 0.2) & (t < 0.8) & ~dropped
    expected = torch.where(inside[:, None], omega * v + kappa * u_c + (1 - omega - kappa) * u_null, v)
    torch.testing.assert_close(v_shift, expected)
    assert shift.effective_scale == pytest.approx(omega / (1 - kappa))


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_registered_objective_gives_a_finite_loss_and_gradient(name):
    torch.manual_seed(0)
    net = TinyAttentionNet()
    ema = TinyAttentionNet()
    ema.load_state_dict(net.state_dict())
    objective = create_objective(name, net, total_steps=100)
    if hasattr(objective, "set_target_network"):
        objective.set_target_network(ema)
    x = torch.randn(16, *net.sample_shape)
    y = torch.randint(0, 3, (16,))
    for step in (0, 50, 99):
        loss, metrics = objective(x, y, step=step, generator=torch.Generator().manual_seed(step))
        assert torch.isfinite(loss), (name, step)
        assert all(torch.isfinite(torch.as_tensor(m)).all() for m in metrics.values())
        net.zero_grad()
        loss.backward()
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0


def test_unknown_objective_option_is_one_clear_sentence():
    with pytest.raises(ValueError, match="unknown objective option"):
        create_objective("meanflow", TinyVelocityNet(), fm_rato=0.5)


def test_schedules_registry_lists_the_published_ones():
    assert {"constant", "step", "linear", "cosine", "sigmoid"} <= set(SCHEDULES.names())
