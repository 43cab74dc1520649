"""Three behaviours where each preset follows its own paper's official code (issue 14), each checked
against a computation written out by hand here, not against flowzoo's own earlier output:

1. target clamp: only the two-point targets of r < t samples with alpha > 0 are clamped (alpha-Flow's
   ``_compute_mean_velocity_d``); r = t samples keep v~ however large it is;
2. CFG with dropped labels: labels drop only inside t_min < t < t_max, and a dropped sample inside the
   interval gets omega v + (1 - omega) u(z_t, t, t | null) (alpha-Flow's ``_compute_velocity_cfg``);
3. MeanFlow's adaptive weight on the per-sample sum: w ||Delta||^2_mean == sum / (sum + c)^p.
"""

from __future__ import annotations

import torch

from flowzoo.objectives import alpha_target, create_objective
from flowzoo.objectives.shift import GuidedDataVelocity, ShiftContext
from flowzoo.objectives.unified import DrawnBatch
from flowzoo.objectives.weighting import Adaptive
from tiny_nets import TinyVelocityNet

B, D = 16, 4


def _times(seed=0):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(2, B, generator=g, dtype=torch.float64) * 0.9 + 0.05
    return torch.maximum(a, b), torch.minimum(a, b)


def test_flow_matching_samples_are_never_clamped_and_bootstrapped_ones_are():
    net = TinyVelocityNet().double()
    t, r = _times()
    r[: B // 2] = t[: B // 2]  # first half: flow-matching samples (r = t)
    alpha = torch.ones(B, dtype=torch.float64)  # alpha = 1 everywhere: the target is v~ itself
    g = torch.Generator().manual_seed(1)
    z = torch.randn(B, D, generator=g, dtype=torch.float64)
    v = 10 * torch.randn(B, D, generator=g, dtype=torch.float64)  # |v| far above the clamp
    with torch.no_grad():
        target = alpha_target(lambda z_, r_, t_: net(z_, t_, t_ - r_), z, r, t, alpha, v, clamp=4.0)
    torch.testing.assert_close(target[: B // 2], v[: B // 2], rtol=0, atol=0)  # r = t: untouched
    torch.testing.assert_close(target[B // 2:], v[B // 2:].clamp(-4, 4), rtol=0, atol=0)  # r < t: clamped


def test_alphaflow_objective_leaves_the_flow_matching_loss_unclamped():
    """At alpha = 1 with fm_ratio = 1 the alphaflow preset's loss is plain FM on v, even for |v| > clamp."""
    torch.manual_seed(0)
    net = TinyVelocityNet().double()
    objective = create_objective("alphaflow", net, alpha=1.0, fm_ratio=1.0, weighting="uniform",
                                 label_dropout=0.0, target_clamp=0.5)
    x = 3 * torch.randn(B, D, dtype=torch.float64)
    e = torch.randn(B, D, dtype=torch.float64)
    t = torch.rand(B, dtype=torch.float64) * 0.9 + 0.05
    y = torch.randint(0, 3, (B,))
    loss, _ = objective.loss(x, DrawnBatch(e, t, t.clone(), y, torch.zeros(B, dtype=torch.bool)), step=0)
    z_t = (1 - t)[:, None] * x + t[:, None] * e
    by_hand = (net(z_t, t, torch.zeros_like(t), y) - (e - x)).pow(2).mean()
    torch.testing.assert_close(loss, by_hand)


def _cfg_context(net, t, labels, dropped, v, z):
    return ShiftContext(z, t, t, t, v, labels, dropped, net.num_classes, net)


def test_dropped_label_inside_the_interval_gets_the_guided_mix_with_null():
    torch.manual_seed(0)
    net = TinyVelocityNet().double()
    omega, kappa, t_min, t_max = 0.2, 0.92, 0.0, 0.75
    shift = GuidedDataVelocity(omega=omega, kappa=kappa, t_min=t_min, t_max=t_max)
    t = torch.linspace(0.05, 0.95, B, dtype=torch.float64)
    z = torch.randn(B, D, dtype=torch.float64)
    v = torch.randn(B, D, dtype=torch.float64)
    null = net.num_classes
    labels = torch.randint(0, 3, (B,))
    dropped = torch.zeros(B, dtype=torch.bool)
    dropped[::2] = True
    labels = torch.where(dropped, torch.full_like(labels, null), labels)
    with torch.no_grad():
        got = shift(_cfg_context(net, t, labels, dropped, v, z))
        u_null = net(z, t, torch.zeros_like(t), torch.full_like(labels, null))
        u_cond = net(z, t, torch.zeros_like(t), labels)
    inside = (t > t_min) & (t < t_max)
    expected = torch.where(inside[:, None], omega * v + kappa * u_cond + (1 - omega - kappa) * u_null, v)
    torch.testing.assert_close(got, expected)
    # the dropped ones reduce to omega v + (1 - omega) u_null, as the official code computes them
    both = inside & dropped
    torch.testing.assert_close(got[both], omega * v[both] + (1 - omega) * u_null[both])
    # the older flowzoo choice is still there, named: dropped samples train on v
    with torch.no_grad():
        old = GuidedDataVelocity(omega, kappa, t_min, t_max, dropped="data")(_cfg_context(net, t, labels, dropped, v, z))
    torch.testing.assert_close(old[both], v[both])


def test_labels_drop_only_inside_the_cfg_interval():
    net = TinyVelocityNet()
    objective = create_objective("meanflow", net, label_dropout=0.5,
                                 shift={"name": "cfg", "omega": 0.2, "kappa": 0.92, "t_min": 0.0, "t_max": 0.75})
    n = 4000
    t = torch.rand(n, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(n, dtype=torch.long)
    labels, dropped = objective.drop_labels(y, n, torch.Generator().manual_seed(1), y.device, t)
    assert not dropped[t >= 0.75].any()  # outside: never dropped, the label is kept
    assert (labels[t >= 0.75] == 0).all()
    rate_inside = dropped[t < 0.75].float().mean().item()
    assert abs(rate_inside - 0.5) < 0.04  # inside: at the configured rate
    everywhere = create_objective("meanflow", net, label_dropout=0.5, shift={
        "name": "cfg", "omega": 0.2, "kappa": 0.92, "t_max": 0.75, "drop_outside_interval": True})
    _, dropped_all = everywhere.drop_labels(y, n, torch.Generator().manual_seed(1), y.device, t)
    assert abs(dropped_all[t >= 0.75].float().mean().item() - 0.5) < 0.06


def test_meanflow_weight_is_the_official_per_sample_sum_form():
    """w * mean(Delta^2) == sum(Delta^2) / (sum(Delta^2) + eps)^p on a hand-built residual."""
    delta = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.1, 0.0, 0.0, 0.0]], dtype=torch.float64)
    sums = torch.tensor([6.0, 0.01], dtype=torch.float64)  # 1 + 4 + 0 + 1, and 0.1^2
    for eps, p in [(1e-2, 1.0), (1e-3, 0.75)]:
        w = Adaptive(c=eps, p=p, reduction="sum")(torch.zeros(2), delta.pow(2).mean(1), None, None, elements=4)
        torch.testing.assert_close(w * delta.pow(2).mean(1), sums / (sums + eps) ** p)
        torch.testing.assert_close(w, 4 / (sums + eps) ** p)


def test_meanflow_preset_uses_the_sum_form_inside_the_objective():
    """The preset's loss equals the official MeanFlow loss computed by hand from the same target."""
    torch.manual_seed(0)
    net = TinyVelocityNet().double()
    objective = create_objective("meanflow", net, fm_ratio=1.0, label_dropout=0.0)  # r = t: target is v
    x, e = torch.randn(B, D, dtype=torch.float64), torch.randn(B, D, dtype=torch.float64)
    t = torch.rand(B, dtype=torch.float64) * 0.9 + 0.05
    y = torch.randint(0, 3, (B,))
    loss, _ = objective.loss(x, DrawnBatch(e, t, t.clone(), y, torch.zeros(B, dtype=torch.bool)), step=0)
    z_t = (1 - t)[:, None] * x + t[:, None] * e
    sq_sum = (net(z_t, t, torch.zeros_like(t), y) - (e - x)).pow(2).sum(1)
    torch.testing.assert_close(loss, (sq_sum / (sq_sum.detach() + 1e-2)).mean())
