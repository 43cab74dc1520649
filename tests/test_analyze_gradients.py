"""`flowzoo analyze gradients`: the L_TFM / L_TC / L_FM' gradient cosines, checked against independent computations."""

from __future__ import annotations

import json

import pytest
import torch

from flowzoo.analyze.gradients import analysis_batch, gradient_cosines
from flowzoo.data import create_dataset
from flowzoo.objectives import create_objective
from test_cli import flowzoo
from tiny_nets import TinyVelocityNet


def flat_grad(loss, net):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(net.parameters()), retain_graph=True)])


def cos(a, b):
    return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()))


@pytest.fixture
def meanflow_setup():
    torch.manual_seed(0)
    dataset = create_dataset("toy:moons")
    net = TinyVelocityNet(dim=2, num_classes=0).double()  # unconditional, like the toy data
    objective = create_objective("meanflow", net, total_steps=100, weighting="uniform", time_sampler="uniform")
    batch = analysis_batch(objective, dataset, 256, seed=0)
    batch.x = batch.x.double()
    for drawn in (batch.pairs, batch.fm):
        drawn.noise, drawn.t, drawn.r = drawn.noise.double(), drawn.t.double(), drawn.r.double()
    return objective, net, batch


def test_the_two_terms_split_the_meanflow_gradient_and_the_cosines_match_a_direct_computation(meanflow_setup):
    """grad L_TFM + grad L_TC = grad of the MeanFlow loss (alpha = 0, uniform weight), computed from the loss itself;
    cos(grad L_FM', grad L_TC) from a flow-matching loss written out by hand."""
    objective, net, batch = meanflow_setup
    x, pairs, fm = batch.x, batch.pairs, batch.fm
    assert bool((pairs.r < pairs.t).all()) and bool((fm.r == fm.t).all())
    loss, terms = objective.loss_terms(x, pairs, step=0)
    l_tfm, l_tc = terms.decomposition()
    g_sum = flat_grad(l_tfm.mean(), net) + flat_grad(l_tc.mean(), net)
    torch.testing.assert_close(g_sum, flat_grad(loss, net), rtol=1e-9, atol=1e-12)

    # L_FM' by hand: u(z_t, t, t) against v = e - x on the same data, noise and times.
    t = fm.t[:, None]
    z_t = (1 - t) * x + t * fm.noise
    u = net(z_t, fm.t, torch.zeros_like(fm.t), None)  # the network takes (t, t - r)
    g_fm = flat_grad((u - (fm.noise - x)).pow(2).mean(1).mean(), net)
    found = gradient_cosines(objective, batch, step=0)
    assert found["cos_fm_tc"] == pytest.approx(cos(g_fm, flat_grad(l_tc.mean(), net)), abs=1e-9)
    assert found["cos_tfm_tc"] == pytest.approx(cos(flat_grad(l_tfm.mean(), net), flat_grad(l_tc.mean(), net)), abs=1e-9)
    assert found["alpha"] == 0.0


def test_measuring_changes_neither_the_weights_nor_their_gradients_and_repeats_exactly(meanflow_setup):
    objective, net, batch = meanflow_setup
    before = [p.detach().clone() for p in net.parameters()]
    first = gradient_cosines(objective, batch, step=5)
    assert gradient_cosines(objective, batch, step=5) == first
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters()))
    assert all(-1.0 <= first[k] <= 1.0 for k in first if k.startswith("cos_"))


def test_cli_writes_one_line_per_measurement_and_a_plot(tmp_path, capsys):
    out = tmp_path / "grad"
    code, text, err = flowzoo("analyze", "gradients", "--data", "toy:moons", "--steps", "10", "--every", "5", "--batch", "64",
                              "--out", str(out), "--quiet", "--set", "backbone.width=32", "--set", "backbone.depth=1",
                              "--set", "train.warmup_steps=2", capsys=capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in (out / "gradients.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 5, 10]
    assert {"cos_tfm_tc", "cos_fm_tc", "cos_tfm_fm", "cos_tfm_tc_w", "cos_fm_tc_w"} <= set(lines[0])
    assert (out / "gradients.png").stat().st_size > 1000 and "cosine of the gradients" in text


def test_cli_bad_input_is_one_sentence(capsys):
    code, _, err = flowzoo("analyze", "gradients", "--every", "0", capsys=capsys)
    assert code == 2 and "--every must be at least 1" in err


def test_health_numbers_match_a_finite_difference_jvp_and_the_loss_gradient(meanflow_setup):
    """The JVP term (t - r) du/dt by a central finite difference along (v, 0, 1); the squared error per
    t-bucket from that target written out by hand; the pair part's gradient norm from the loss itself."""
    objective, net, batch = meanflow_setup
    x, pairs = batch.x, batch.pairs
    t, r = pairs.t[:, None], pairs.r[:, None]
    v = pairs.noise - x
    z_t = (1 - t) * x + t * pairs.noise
    u = lambda z, tt: net(z, tt, tt - pairs.r, None)  # noqa: E731 (the network takes (t, t - r))
    h = 1e-6
    with torch.no_grad():
        du_dt = (u(z_t + h * v, pairs.t + h) - u(z_t - h * v, pairs.t - h)) / (2 * h)
        jvp_term = (t - r) * du_dt
        rel = (jvp_term.norm(dim=1) / v.norm(dim=1)).mean()
        sq = (u(z_t, pairs.t) - (v - jvp_term)).pow(2).mean(1)
    found = gradient_cosines(objective, batch, step=0)
    assert found["jvp_term_rel"] == pytest.approx(float(rel), rel=1e-6)
    low = pairs.t < 0.25
    assert found["sq_err_t0.00-0.25"] == pytest.approx(float(sq[low].mean()), rel=1e-6)
    loss, _ = objective.loss_terms(x, pairs, step=0)
    assert found["gradnorm_pairs"] == pytest.approx(float(flat_grad(loss, net).norm()), rel=1e-9)
    assert found["weight_min_pairs"] == found["weight_max_pairs"] == 1.0  # uniform weighting
