"""Issue 25, the alpha-Flow and Shortcut rows: each preset's time draws, label dropout, clipping and targets
as its official code computes them, checked against closed forms and against the code's equations written
out here in the code's own convention (not against flowzoo's earlier output).

alpha-Flow: snap-research/alphaflow b0fef77, src/training/loss.py, AlphaFlowLoss.sample_traj_params.
Shortcut: kvfrans/shortcut-models 6010043, targets_shortcut.py, get_targets.
"""

from __future__ import annotations

import math

import torch

from flowzoo.objectives import create_objective
from flowzoo.objectives.unified import DrawnBatch
from tiny_nets import TinyVelocityNet


def _logit_normal_quantile_of_max(p: float, mean: float, std: float) -> float:
    """The p-quantile of max(sigmoid(n1), sigmoid(n2)), n_i ~ N(mean, std): P(max <= q) = Phi(.)^2 = p."""
    z = math.sqrt(2) * torch.special.erfinv(torch.tensor(2 * math.sqrt(p) - 1, dtype=torch.float64)).item()
    return 1 / (1 + math.exp(-(mean + std * z)))


def _median_tolerance(density_at_median: float, n: int) -> float:
    """Four standard errors of a sample median: SE = 1 / (2 f(m) sqrt(n))."""
    return 4 / (2 * density_at_median * math.sqrt(n))


def test_alphaflow_flow_matching_rows_take_their_own_single_logit_normal_time():
    objective = create_objective("alphaflow", TinyVelocityNet(), total_steps=100)
    g = torch.Generator().manual_seed(0)
    fm_t, pair_t = [], []
    for _ in range(200):
        t, r, fm = objective.sample_times(512, 0, g, None)
        assert int(fm.sum()) == 256  # exactly round(fm_ratio * B), as the code's int(batch_size * ratio_fm)
        assert torch.equal(r[fm], t[fm]) and bool((r[~fm] < t[~fm]).all())
        fm_t.append(t[fm]), pair_t.append(t[~fm])
    fm_t, pair_t = torch.cat(fm_t).double(), torch.cat(pair_t).double()
    n = fm_t.numel()
    # r = t rows: one draw sigmoid(N(-0.4, 1)): median sigmoid(-0.4) = 0.4013, density phi(0) / (m (1 - m)).
    m = 1 / (1 + math.exp(0.4))
    f = (1 / math.sqrt(2 * math.pi)) / (m * (1 - m))
    assert abs(fm_t.median().item() - m) < _median_tolerance(f, n)
    # r < t rows: the larger of two draws: median where Phi(logit q + 0.4)^2 = 1/2 (0.5362).
    q = _logit_normal_quantile_of_max(0.5, -0.4, 1.0)
    zq = math.log(q / (1 - q)) + 0.4
    f_max = 2 * 0.5 ** 0.5 * math.exp(-zq * zq / 2) / math.sqrt(2 * math.pi) / (q * (1 - q))
    assert abs(pair_t.median().item() - q) < _median_tolerance(f_max, n)
    assert abs(q - 0.5362) < 1e-3 and abs(m - 0.4013) < 1e-3


def test_alphaflow_earlier_choice_is_the_named_option_fm_times_null():
    """fm_times: null gives the r = t rows the larger of their pair (median 0.536), flowzoo's choice before."""
    objective = create_objective("alphaflow", TinyVelocityNet(), total_steps=100, fm_times=None)
    g = torch.Generator().manual_seed(1)
    draws = [objective.sample_times(512, 0, g, None) for _ in range(100)]
    fm_t = torch.cat([t[fm] for t, _, fm in draws]).double()
    assert abs(fm_t.median().item() - _logit_normal_quantile_of_max(0.5, -0.4, 1.0)) < 0.01


# --- Shortcut ---------------------------------------------------------------------------------------

def test_shortcut_draws_bootstrap_levels_as_the_code_does_and_flow_matching_at_the_finest_step():
    objective = create_objective("shortcut", TinyVelocityNet())
    g = torch.Generator().manual_seed(2)
    fm_t = []
    for _ in range(50):
        t, r, fm = objective.sample_times(256, 0, g, None)
        assert int(fm.sum()) == 224 and int((~fm).sum()) == 32  # bootstrap_every = 8
        h = (t - r).double()
        # Flow-matching rows: d = 1/128 exactly (dt_base = log2 128), t on the 128-point grid [1/128, 1].
        assert torch.equal(h[fm], torch.full_like(h[fm], 1 / 128))
        assert torch.equal(t[fm] * 128, torch.round(t[fm] * 128)) and float(t[fm].min()) >= 1 / 128
        fm_t.append(t[fm])
        # Bootstrap rows: dt_base = repeat(6 - arange(7), 32 // 7) then zeros: 4 rows at each of
        # h = 1/64 ... 1/2, and 4 + 4 = 8 at h = 1; t a multiple of h in [h, 1].
        levels = torch.round(-torch.log2(h[~fm])).long()
        assert torch.bincount(levels, minlength=7).tolist() == [8, 4, 4, 4, 4, 4, 4]
        tb = t[~fm].double()
        assert torch.equal(tb / h[~fm], torch.round(tb / h[~fm])) and bool((tb >= h[~fm]).all())
    # t uniform on {1, ..., 128}/128: mean 64.5/128, variance (128^2 - 1)/12/128^2.
    fm_t = torch.cat(fm_t).double()
    se = math.sqrt((128 ** 2 - 1) / 12) / 128 / math.sqrt(fm_t.numel())
    assert abs(fm_t.mean().item() - 64.5 / 128) < 4 * se


def test_shortcut_drops_labels_on_flow_matching_rows_only():
    objective = create_objective("shortcut", TinyVelocityNet(), label_dropout=1.0)
    x, y = torch.randn(256, 4), torch.randint(0, 3, (256,))
    drawn = objective.draw(x, y, 0, torch.Generator().manual_seed(3))
    assert torch.equal(drawn.dropped, drawn.fm)  # p = 1: every flow-matching row, and no bootstrap row
    assert bool((drawn.labels[~drawn.fm] == y[~drawn.fm]).all())


def _official_shortcut_loss(net, x, e, t, h, y, fm):
    """The loss of get_targets + loss_fn written in the code's own convention: time tc = 1 - t (0 = noise),
    x_tc = (1 - tc) x0 + tc x1 with x0 the noise and x1 the data (the code's 1e-5 left out, as in flowzoo),
    velocity toward the data, and a model call model(x, tc, d) that is flowzoo's network read backwards:
    -net(x, t = 1 - tc, h = d). Bootstrap rows: two half steps of d/2, the midpoint and the target clipped
    to +-4; flow-matching rows: the data velocity x1 - x0 at d = 1/128. mse per sample, mean over the batch."""
    def model(z, tc, d, labels):
        return -net(z, 1 - tc, d, labels)

    tc = 1 - t
    x_t = (1 - tc)[:, None] * e + tc[:, None] * x
    target = x - e  # flow-matching rows
    b = ~fm
    d2 = h[b] / 2
    with torch.no_grad():  # the code's targets come from call_model_fn(..., train=False): no gradient
        v_b1 = model(x_t[b], tc[b], d2, y[b])
        x_t2 = (x_t[b] + d2[:, None] * v_b1).clamp(-4, 4)
        v_b2 = model(x_t2, tc[b] + d2, d2, y[b])
        target = target.clone()
        target[b] = ((v_b1 + v_b2) / 2).clamp(-4, 4)
    v_prime = model(x_t, tc, h, y)
    return ((v_prime - target) ** 2).mean(1).mean()


def test_shortcut_loss_and_gradient_equal_the_official_computation():
    torch.manual_seed(4)
    net = TinyVelocityNet().double()
    with torch.no_grad():  # large outputs, so that both clips (midpoint and target) act on some rows
        net.out.weight.mul_(20)
    objective = create_objective("shortcut", net, label_dropout=0.0)
    objective.set_target_network(net)  # the code's bootstrap_ema: u- is the EMA; here the same weights
    x = 3 * torch.randn(64, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (64,))
    drawn = objective.draw(x.float(), y, 0, torch.Generator().manual_seed(5))
    t, r, fm = drawn.t.double(), drawn.r.double(), drawn.fm
    e = torch.randn(64, 4, dtype=torch.float64)
    drawn = DrawnBatch(e, t, r, y, torch.zeros(64, dtype=torch.bool), None, fm)

    loss, _ = objective.loss(x, drawn, step=0)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    by_hand = _official_shortcut_loss(net, x, e, t, t - r, y, fm)
    hand_grads = torch.autograd.grad(by_hand, list(net.parameters()))

    torch.testing.assert_close(loss, by_hand, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, hand_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # The example exercises what it claims: some midpoints and some targets were clipped.
    with torch.no_grad():
        b = ~fm
        d2 = (t - r)[b] / 2
        x_t = (t[:, None] * e + (1 - t)[:, None] * x)[b]
        v_b1 = -net(x_t, t[b], d2, y[b])
        assert bool(((x_t + d2[:, None] * v_b1).abs() > 4).any())


def test_shortcut_earlier_behaviour_is_a_named_option():
    """fm_times null + the unstratified grid: flow-matching rows at h = 0 on the dyadic grid (before issue 25)."""
    objective = create_objective("shortcut", TinyVelocityNet(), fm_times=None,
                                 time_sampler={"name": "dyadic", "levels": 6})
    t, r, fm = objective.sample_times(256, 0, torch.Generator().manual_seed(6), None)
    assert torch.equal(r[fm], t[fm]) and int(fm.sum()) == 224


def test_imf_drops_labels_on_its_r_equals_t_rows_only_ten_percent_of_the_batch():
    """iMF's cond_drop (Lyy-iiis/imeanflow imf.py): Binomial(B, 0.1) drops on the first rows, which sample_tr
    made the r = t rows; flowzoo drops each r = t row with 0.2: no r < t row drops, 10% of the batch does."""
    objective = create_objective("imf", TinyVelocityNet())
    x, y = torch.randn(512, 4), torch.randint(0, 3, (512,))
    g = torch.Generator().manual_seed(7)
    dropped = fm_rows = 0
    for _ in range(40):
        drawn = objective.draw(x, y, 0, g)
        fm = drawn.r == drawn.t
        assert not bool((drawn.dropped & ~fm).any())
        dropped += int(drawn.dropped.sum())
        fm_rows += int(fm.sum())
    n = 40 * 512
    assert fm_rows == n // 2
    assert abs(dropped / n - 0.1) < 4 * math.sqrt(0.2 * 0.8 * (n // 2)) / n
