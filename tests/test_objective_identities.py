"""The unification theorem of alpha-Flow, checked against independent computations (DESIGN.md §2)."""

from __future__ import annotations

import pytest
import torch

from flowzoo.objectives import alpha_target, alpha_target_parts, create_objective, loss_decomposition
from flowzoo.objectives.shift import ModelVelocity, ShiftContext
from flowzoo.objectives.unified import DrawnBatch
from flowzoo.objectives.velocity import ConditionedVelocity
from tiny_nets import TinyVelocityNet

B, D = 16, 4


def _batch(dtype=torch.float32, r_equals_t=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=dtype)
    e = torch.randn(B, D, generator=g, dtype=dtype)
    a, b = torch.rand(2, B, generator=g, dtype=dtype) * 0.9 + 0.05
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    if r_equals_t:
        r = t.clone()
    y = torch.randint(0, 3, (B,), generator=g)
    return x, e, t, r, y


def _drawn(e, t, r, y):
    return DrawnBatch(e, t, r, y, torch.zeros(B, dtype=torch.bool))


def _path(x, e, t):
    return (1 - t)[:, None] * x + t[:, None] * e, e - x


def test_alpha_one_is_trajectory_flow_matching():
    net = TinyVelocityNet()
    x, e, t, r, y = _batch()
    objective = create_objective("trajectory_fm", net, label_dropout=0.0)
    loss, _ = objective.loss(x, _drawn(e, t, r, y), step=0)
    z_t, v = _path(x, e, t)
    by_hand = (net(z_t, t, t - r, y) - v).pow(2).mean()
    torch.testing.assert_close(loss, by_hand)


def test_alpha_one_with_fm_ratio_one_is_plain_flow_matching():
    net = TinyVelocityNet()
    x, e, t, r, y = _batch()
    objective = create_objective("flow_matching", net, label_dropout=0.0)
    drawn = objective.draw(x, y, step=0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(drawn.r, drawn.t), "fm_ratio = 1 must give r = t for every sample"
    loss, _ = objective.loss(x, _drawn(e, t, t.clone(), y), step=0)
    z_t, v = _path(x, e, t)
    by_hand = (net(z_t, t, torch.zeros_like(t), y) - v).pow(2).mean()
    torch.testing.assert_close(loss, by_hand)


def _finite_difference_dudt(net, z, r, t, v, y, eps=1e-6):
    """d/dt u(z + (tau - t) v, r, tau) at tau = t by a float64 central difference, by hand."""
    with torch.no_grad():
        plus = net(z + eps * v, t + eps, t + eps - r, y)
        minus = net(z - eps * v, t - eps, t - eps - r, y)
    return (plus - minus) / (2 * eps)


def _grads(net, loss):
    grads = torch.autograd.grad(loss, list(net.parameters()), retain_graph=True)
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("weighting", ["inverse_alpha", "inverse_alpha_adaptive"])
def test_alpha_to_zero_gradient_converges_to_meanflow_linearly(weighting):
    torch.manual_seed(0)
    net = TinyVelocityNet().double()
    x, e, t, r, y = _batch(torch.float64)
    z_t, v = _path(x, e, t)
    c = 1e-3

    # MeanFlow's gradient, by hand: u_tgt = v - (t - r) du/dt with du/dt from finite differences;
    # plain squared error for the 1/alpha weighting, MeanFlow's adaptive 1/(||Delta||^2 + c) for the other.
    u_tgt = v - (t - r)[:, None] * _finite_difference_dudt(net, z_t, r, t, v, y)
    sq = (net(z_t, t, t - r, y) - u_tgt).pow(2).mean(1)
    meanflow_loss = sq.mean() if weighting == "inverse_alpha" else (sq / (sq.detach() + c)).mean()
    meanflow_grad = _grads(net, meanflow_loss)

    errors = []
    for alpha in (1e-1, 1e-2, 1e-3):
        spec = weighting if weighting == "inverse_alpha" else {"name": weighting, "c": c, "p": 1.0}
        objective = create_objective("alphaflow", net, alpha=alpha, weighting=spec, target_clamp=None, fm_ratio=0.0)
        loss, _ = objective.loss(x, _drawn(e, t, r, y), step=0)
        g = _grads(net, loss)
        errors.append(float((g - meanflow_grad).norm() / meanflow_grad.norm()))
    print(f"{weighting}: relative gradient error at alpha = 1e-1, 1e-2, 1e-3:", errors)
    assert errors[0] > errors[1] > errors[2]
    # O(alpha): each tenfold smaller alpha gives a roughly tenfold smaller error.
    for big, small in zip(errors, errors[1:]):
        assert 5 < big / small < 20
    assert errors[2] < 1e-2


def test_meanflow_preset_matches_hand_computed_jvp_target():
    net = TinyVelocityNet().double()
    x, e, t, r, y = _batch(torch.float64)
    objective = create_objective("meanflow", net, weighting="uniform", fm_ratio=0.0, label_dropout=0.0)
    loss, _ = objective.loss(x, _drawn(e, t, r, y), step=0)
    z_t, v = _path(x, e, t)
    u_tgt = v - (t - r)[:, None] * _finite_difference_dudt(net, z_t, r, t, v, y)
    by_hand = (net(z_t, t, t - r, y) - u_tgt).pow(2).mean()
    torch.testing.assert_close(loss, by_hand, rtol=1e-8, atol=1e-10)


def test_alpha_half_with_model_shift_is_the_shortcut_target():
    net = TinyVelocityNet()
    x, e, t, r, y = _batch()
    z_t, v = _path(x, e, t)
    alpha = torch.full((B,), 0.5)
    s = 0.5 * (r + t)
    u = ConditionedVelocity(net, y)
    ctx = ShiftContext(z_t, r, t, s, v, y, torch.zeros(B, dtype=torch.bool), 3, net)
    with torch.no_grad():
        target = alpha_target(u, z_t, r, t, alpha, ModelVelocity()(ctx))
        # Shortcut (Frans et al. 2024): two half steps of size d = (t - r)/2, averaged.
        d = 0.5 * (t - r)
        first = net(z_t, t, d, y)
        z_mid = z_t - d[:, None] * first
        second = net(z_mid, t - d, d, y)
        shortcut = 0.5 * (first + second)
    torch.testing.assert_close(target, shortcut)


def test_x0_form_with_r_zero_is_the_consistency_training_target():
    net = TinyVelocityNet()
    x, e, t, _, y = _batch()
    r = torch.zeros_like(t)
    t_prev = 0.7 * t  # CT's pair (t', t), t' < t on the same noise
    alpha = (t - t_prev) / t
    z_t, v = _path(x, e, t)
    with torch.no_grad():
        target = alpha_target(ConditionedVelocity(net, y), z_t, r, t, alpha, v)
        f_theta_target = z_t - t[:, None] * target
        # By hand: f(z, t) = z - t u(z, 0, t) evaluated at the earlier point of the same trajectory.
        z_prev = (1 - t_prev)[:, None] * x + t_prev[:, None] * e
        f_prev = z_prev - t_prev[:, None] * net(z_prev, t_prev, t_prev, y)
    torch.testing.assert_close(f_theta_target, f_prev)


def test_continuous_ct_is_the_alpha_to_zero_limit_of_discrete_ct():
    net = TinyVelocityNet().double()
    x, e, t, _, y = _batch(torch.float64)
    r = torch.zeros_like(t)
    z_t, v = _path(x, e, t)
    u = ConditionedVelocity(net, y)
    with torch.no_grad():
        continuous = alpha_target(u, z_t, r, t, torch.zeros_like(t), v)
        errs = []
        for a in (1e-2, 1e-3):
            discrete = alpha_target(u, z_t, r, t, torch.full_like(t, a), v)
            # (1/alpha)(target_alpha - u-) -> (continuous - u-): compare the slopes, error O(alpha).
            u0 = net(z_t, t, t, y)
            errs.append(float(((discrete - u0) / a - (continuous - u0)).abs().max()))
    assert errs[1] < errs[0] / 5


def test_flow_matching_samples_skip_the_network_call_with_the_same_gradient():
    """For r = t the 1/alpha-weighted two-point loss has exactly the FM gradient."""
    net = TinyVelocityNet().double()
    x, e, t, _, y = _batch(torch.float64)
    r = t.clone()
    z_t, v = _path(x, e, t)
    alpha = 0.3
    pred = net(z_t, t, torch.zeros_like(t), y)
    two_point = alpha * v + (1 - alpha) * pred.detach()
    g_two_point = _grads(net, (pred - two_point).pow(2).mean() / alpha)
    g_fm = _grads(net, (net(z_t, t, torch.zeros_like(t), y) - v).pow(2).mean())
    torch.testing.assert_close(g_two_point, g_fm)
    # And the objective indeed treats these samples as alpha = 1, with target v.
    objective = create_objective("alphaflow", net, alpha=alpha, target_clamp=None, label_dropout=0.0)
    _, terms = objective.loss_terms(x, _drawn(e, t, r, y), step=0)
    assert torch.all(terms.alpha == 1)
    torch.testing.assert_close(terms.target.u_tgt, v)


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.7])
def test_loss_decomposition_has_the_gradient_of_the_inverse_alpha_loss(alpha):
    net = TinyVelocityNet().double()
    x, e, t, r, y = _batch(torch.float64)
    objective = create_objective(
        "alphaflow", net, alpha=alpha, weighting="inverse_alpha", target_clamp=None, fm_ratio=0.0
    )
    loss, terms = objective.loss_terms(x, _drawn(e, t, r, y), step=0)
    l_tfm, l_tc = terms.decomposition()
    torch.testing.assert_close(_grads(net, (l_tfm + l_tc).mean()), _grads(net, loss))


def test_target_clamp_bounds_the_two_point_target_only():
    net = TinyVelocityNet()
    x, e, t, r, y = _batch()
    z_t, v = _path(x, e, t)
    u = ConditionedVelocity(net, y)
    big = 10 * v
    alpha = torch.cat([torch.full((B // 2,), 0.5), torch.zeros(B - B // 2)])
    with torch.no_grad():
        clamped = alpha_target(u, z_t, r, t, alpha, big, clamp=0.5)
        free = alpha_target(u, z_t, r, t, alpha, big)
    assert clamped[: B // 2].abs().max() <= 0.5
    torch.testing.assert_close(clamped[B // 2:], free[B // 2:])


def test_mixed_alpha_batch_equals_each_branch_alone():
    net = TinyVelocityNet()
    x, e, t, r, y = _batch()
    z_t, v = _path(x, e, t)
    alpha = torch.tensor([0.0, 0.3, 1.0, 0.5] * (B // 4))
    u = ConditionedVelocity(net, y)
    with torch.no_grad():
        mixed = alpha_target(u, z_t, r, t, alpha, v)
        for a in (0.0, 0.3, 1.0, 0.5):
            alone = alpha_target(u, z_t, r, t, torch.full((B,), a), v)
            torch.testing.assert_close(mixed[alpha == a], alone[alpha == a])


def test_plain_callable_without_subset_gives_the_same_target():
    net = TinyVelocityNet()
    x, e, t, r, y = _batch()
    z_t, v = _path(x, e, t)
    alpha = torch.tensor([0.0, 0.4] * (B // 2))
    bound = ConditionedVelocity(net, y)

    def plain(z, r_, t_):  # a plugin author's closure: whole batch only
        return net(z, t_, t_ - r_, y)

    with torch.no_grad():
        torch.testing.assert_close(alpha_target(plain, z_t, r, t, alpha, v), alpha_target(bound, z_t, r, t, alpha, v))


def test_alpha_target_rejects_bad_alpha():
    net = TinyVelocityNet()
    x, e, t, r, y = _batch()
    z_t, v = _path(x, e, t)
    with pytest.raises(ValueError, match="alpha"):
        alpha_target(ConditionedVelocity(net, y), z_t, r, t, torch.full((B,), 1.5), v)
    with pytest.raises(ValueError, match="shape"):
        alpha_target(ConditionedVelocity(net, y), z_t, r, t, torch.zeros(B, 1), v)


def test_decomposition_parts_are_zero_at_alpha_one():
    net = TinyVelocityNet()
    x, e, t, r, y = _batch()
    z_t, v = _path(x, e, t)
    alpha = torch.ones(B)
    parts = alpha_target_parts(ConditionedVelocity(net, y), z_t, r, t, alpha, v)
    pred = net(z_t, t, t - r, y)
    l_tfm, l_tc = loss_decomposition(pred, v, parts, alpha, t, r)
    assert torch.all(l_tc == 0)
    torch.testing.assert_close(l_tfm, (pred - v).pow(2).mean(1))
