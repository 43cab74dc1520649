"""The objectives after alpha-Flow (issue 15), each checked against its own paper's formula written out
here by hand (torch.func.jvp for total derivatives), and against the preset it reduces to in its
limiting case. The fixed point at the exact Gaussian flow is checked for every registered objective in
test_objective_fixed_point.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import jvp

from flowzoo.objectives import create_objective
from flowzoo.objectives.jvp import get_jvp_backend
from flowzoo.objectives.schedules import build_schedule
from flowzoo.objectives.unified import DrawnBatch
from flowzoo.objectives.weighting import TangentNormalised
from flowzoo.backbones.prediction import XPrediction, apply_prediction
from tiny_nets import TinyVelocityNet

B, D = 12, 4


def _batch(seed=0, r_equals_t=0):
    """Data, noise, times and labels for B samples; the first ``r_equals_t`` have r = t."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    e = torch.randn(B, D, generator=g, dtype=torch.float64)
    a, b = torch.rand(2, B, generator=g, dtype=torch.float64) * 0.9 + 0.05
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    r[:r_equals_t] = t[:r_equals_t]
    y = torch.randint(0, 3, (B,), generator=g)
    draws = torch.rand(B, generator=g, dtype=torch.float64)
    return x, e, t, r, y, draws


def _terms(objective, x, e, t, r, y, draws=None, step=0):
    drawn = DrawnBatch(e, t, r, y, torch.zeros(B, dtype=torch.bool), draws)
    return objective.loss_terms(x, drawn, step)[1]


def _u(net, y):
    return lambda z, r, t: net(z, t, t - r, y)


def _net(seed=0):
    torch.manual_seed(seed)
    return TinyVelocityNet().double()


def _total_derivative(net, y, z, r, t, w):
    """d/dt u(z_t, r, t) along dz/dt = w, by forward-mode AD (tangents (w, 0, 1) on (z, r, t))."""
    _, d = jvp(lambda z_, t_: net(z_, t_, t_ - r, y), (z, t), (w, torch.ones_like(t)))
    return d


# --- SoFlow -------------------------------------------------------------------------------------------

def test_soflow_loss_is_the_solution_consistency_loss_per_sample():
    """SoFlow (arXiv 2512.15657): f(x_t, t, r) = z_t - (t - r) u; l = t + (r - t) rho, z_l = z_t - (t - l) v;
    loss ||f - sg f(z_l, l, r)||^2 / ((t - l)(t - r)) / (||f - f-||^2 / (t - l)^2 + c)^p times the code's 1/2
    (its consistency term has half the squared form's gradient), and at r = t the flow-matching loss
    ||u - v||^2 / (||u - v||^2 + c)^p (per-element means, c = 0.01, p = 1.0). Unguided (shift data) here;
    tests/test_parity_soflow.py checks the preset's defaults, CFG included, against the official loss."""
    net = _net()
    objective = create_objective("soflow", net, total_steps=1000, label_dropout=0.0, shift="data")
    x, e, t, r, y, _ = _batch(r_equals_t=4)
    step = 0
    rho = 0.1  # the exponential schedule's start value
    terms = _terms(objective, x, e, t, r, y, step=step)
    per_sample = terms.weight * terms.sq_err
    z_t = (1 - t)[:, None] * x + t[:, None] * e
    v = e - x
    c, p = 0.01, 1.0
    with torch.no_grad():
        u = _u(net, y)
        f = z_t - (t - r)[:, None] * u(z_t, r, t)
        l = t + (r - t) * rho
        z_l = z_t - (t - l)[:, None] * v
        f_minus = z_l - (l - r)[:, None] * u(z_l, r, l)
        sq = (f - f_minus).pow(2).mean(1)
        soflow = 0.5 * sq / ((t - l) * (t - r)).clamp(min=1e-300) / (sq / (t - l).pow(2).clamp(min=1e-300) + c).pow(p)
        fm_sq = (u(z_t, t, t) - v).pow(2).mean(1)
        fm = fm_sq / (fm_sq + c).pow(p)
    expected = torch.where(r == t, fm, soflow)
    torch.testing.assert_close(per_sample.detach(), expected, rtol=1e-10, atol=1e-12)


def test_exponential_schedule_is_geometric_between_its_end_points():
    schedule = build_schedule({"name": "exponential", "start": 0.1, "end": 0.002}, total_steps=1000)
    assert schedule.value(0) == pytest.approx(0.1)
    assert schedule.value(1000) == pytest.approx(0.002)
    assert schedule.value(500) == pytest.approx(math.sqrt(0.1 * 0.002))  # log-linear: the geometric mean
    assert schedule.value(250) / schedule.value(0) == pytest.approx(schedule.value(1000) / schedule.value(750))
    with pytest.raises(ValueError, match="start, end > 0"):
        build_schedule({"name": "exponential", "start": 0.1, "end": 0.0}, total_steps=1000)


# --- SplitMeanFlow ------------------------------------------------------------------------------------

def test_splitmeanflow_target_is_interval_splitting():
    """(t - r) u(z_t, r, t) = (t - s) u(z_t, s, t) + (s - r) u(z_s, r, s), s = (1 - lambda) t + lambda r,
    z_s = z_t - (t - s) u(z_t, s, t) (arXiv 2507.16884, Algorithm 1), lambda the step's per-sample draw."""
    net = _net(1)
    objective = create_objective("splitmeanflow", net, label_dropout=0.0)
    x, e, t, r, y, lam = _batch(seed=1, r_equals_t=3)
    terms = _terms(objective, x, e, t, r, y, draws=lam)
    z_t = (1 - t)[:, None] * x + t[:, None] * e
    with torch.no_grad():
        u = _u(net, y)
        s = (1 - lam) * t + lam * r
        u_st = u(z_t, s, t)
        z_s = z_t - (t - s)[:, None] * u_st
        split = ((t - s)[:, None] * u_st + (s - r)[:, None] * u(z_s, r, s)) / (t - r).clamp(min=1e-300)[:, None]
    bootstrap = r < t
    torch.testing.assert_close(terms.target.u_tgt[bootstrap], split[bootstrap], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(terms.target.u_tgt[~bootstrap], (e - x)[~bootstrap], rtol=0, atol=0)


def test_splitmeanflow_at_lambda_one_half_is_shortcut():
    """The limiting case: lambda = 1/2 is Shortcut's self-consistency target (online network, no clamp)."""
    net = _net(2)
    split = create_objective("splitmeanflow", net, label_dropout=0.0)
    shortcut = create_objective("shortcut", net, label_dropout=0.0, target_network="online", target_clamp=None)
    x, e, t, r, y, _ = _batch(seed=2, r_equals_t=3)
    half = torch.full((B,), 0.5, dtype=torch.float64)
    a = _terms(split, x, e, t, r, y, draws=half).target.u_tgt
    b = _terms(shortcut, x, e, t, r, y).target.u_tgt
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_uniform_alpha_is_drawn_per_sample_and_reproducibly():
    net = _net()
    objective = create_objective("splitmeanflow", net)
    x = torch.randn(256, D, dtype=torch.float64)
    one = objective.draw(x, None, 0, torch.Generator().manual_seed(5))
    two = objective.draw(x, None, 0, torch.Generator().manual_seed(5))
    assert torch.equal(one.alpha_draws, two.alpha_draws)
    alpha = objective.alpha_schedule.per_sample(0, one.t, one.r, one.alpha_draws)
    assert 0 <= alpha.min() and alpha.max() < 1 and alpha.std() > 0.2  # U(0, 1): std 0.289


# --- TiM ----------------------------------------------------------------------------------------------

def test_tim_finite_difference_target_matches_the_jvp_target_and_its_weight_is_the_closed_form():
    """TiM (arXiv 2509.04394) takes MeanFlow's total derivative by a central difference (eps 0.005): its
    target agrees with forward-mode AD to O(eps^2); weight 1/(||Delta||^2 + 1e-5) / sqrt(tan t - tan r + 1)."""
    net = _net(3)
    objective = create_objective("tim", net, label_dropout=0.0)
    x, e, t, r, y, _ = _batch(seed=3, r_equals_t=4)
    terms = _terms(objective, x, e, t, r, y)
    z_t = (1 - t)[:, None] * x + t[:, None] * e
    v = e - x
    exact = v - (t - r)[:, None] * _total_derivative(net, y, z_t, r, t, v)
    bootstrap = r < t
    torch.testing.assert_close(terms.target.u_tgt[bootstrap], exact[bootstrap], rtol=0, atol=1e-4)
    assert not torch.allclose(terms.target.u_tgt[bootstrap], exact[bootstrap], rtol=0, atol=1e-12)  # it is an FD
    g = torch.where(bootstrap, 1 / torch.sqrt(torch.tan(t) - torch.tan(r) + 1.0), torch.ones_like(t))
    # The adaptive denominator holds TiM's directional term too: 1 - cos(u, u_tgt), one cosine per flat sample.
    pred, u_tgt = terms.pred.detach(), terms.target.u_tgt
    direction = 1 - (pred * u_tgt).sum(1) / (pred.norm(dim=1) * u_tgt.norm(dim=1))
    torch.testing.assert_close(terms.weight, g / (terms.sq_err.detach() + direction + 1e-5), rtol=1e-12, atol=0)


def test_tim_sets_r_zero_on_its_consistency_share():
    objective = create_objective("tim", _net())
    x = torch.randn(1000, D, dtype=torch.float64)
    drawn = objective.draw(x, None, 0, torch.Generator().manual_seed(0))
    zero = (drawn.r == 0).float().mean().item()
    assert 0.07 < zero < 0.13  # r_zero_ratio 0.2 before fm_ratio 0.5 takes half: 0.1


# --- sCM ----------------------------------------------------------------------------------------------

def test_scm_is_the_r_zero_jvp_target_with_normalised_tangent():
    """Continuous-time CT (Lu & Song 2024) on the linear path: r = 0 everywhere, u_tgt = v - t du/dt."""
    net = _net(4)
    objective = create_objective("scm", net, label_dropout=0.0)
    x = torch.randn(B, D, dtype=torch.float64)
    drawn = objective.draw(x, None, 0, torch.Generator().manual_seed(4))
    assert (drawn.r == 0).all() and (drawn.t > 0).all()
    y = torch.randint(0, 3, (B,))
    terms = _terms(objective, x, drawn.noise, drawn.t, drawn.r, y)
    t, r, e = drawn.t, drawn.r, drawn.noise
    z_t = (1 - t)[:, None] * x + t[:, None] * e
    v = e - x
    expected = v - t[:, None] * _total_derivative(net, y, z_t, r, t, v)
    torch.testing.assert_close(terms.target.u_tgt, expected, rtol=1e-10, atol=1e-12)


def test_tangent_normalisation_makes_the_gradient_two_delta_over_its_norm():
    """sCM Sec. 4.2: g -> g / (||g|| + c); the weighted loss's gradient is 2 Delta / (||Delta||_2 + c)."""
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(B, D, generator=g, dtype=torch.float64) * torch.logspace(-3, 2, B, dtype=torch.float64)[:, None]
    pred = delta.clone().requires_grad_(True)  # target 0, so Delta = pred
    sq = pred.pow(2).mean(1)
    ones = torch.ones(B, dtype=torch.float64)
    w = TangentNormalised(c=0.1)(ones, sq.detach(), ones, 0 * ones, elements=D)
    (w * sq).sum().backward()
    expected = 2 * delta / (delta.norm(dim=1, keepdim=True) + 0.1)
    torch.testing.assert_close(pred.grad, expected, rtol=1e-12, atol=0)


# --- iMF ----------------------------------------------------------------------------------------------

def test_imf_target_takes_the_jvp_along_the_models_instantaneous_velocity():
    """iMF: u_tgt = v - (t - r) d/dt u-(z_t, r, t) with tangents (u-(z_t, t, t), 0, 1); the anchor stays v."""
    net = _net(5)
    objective = create_objective("imf", net, label_dropout=0.0)
    x, e, t, r, y, _ = _batch(seed=5, r_equals_t=4)
    terms = _terms(objective, x, e, t, r, y)
    z_t = (1 - t)[:, None] * x + t[:, None] * e
    v = e - x
    with torch.no_grad():
        w = net(z_t, t, torch.zeros_like(t), y)
    expected = v - (t - r)[:, None] * _total_derivative(net, y, z_t, r, t, w)
    torch.testing.assert_close(terms.target.u_tgt, expected, rtol=1e-10, atol=1e-12)


def test_imf_with_the_data_tangent_is_meanflow():
    net = _net(6)
    imf = create_objective("imf", net, label_dropout=0.0, tangent="shift", fm_ratio=0.75)
    meanflow = create_objective("meanflow", net, label_dropout=0.0)
    x, e, t, r, y, _ = _batch(seed=6, r_equals_t=4)
    a, b = _terms(imf, x, e, t, r, y), _terms(meanflow, x, e, t, r, y)
    torch.testing.assert_close(a.target.u_tgt, b.target.u_tgt, rtol=0, atol=0)
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)


# --- pMF: x-prediction --------------------------------------------------------------------------------

def test_x_prediction_is_read_as_the_velocity_that_lands_on_it():
    """u = (z - x^) / t, so the one-step sample z_t - t u(z_t, 0, t) is the network's x^ itself."""
    inner = _net(7)
    net = apply_prediction(inner, "x")
    assert isinstance(net, XPrediction) and apply_prediction(inner, "u") is inner
    z = torch.randn(B, D, dtype=torch.float64)
    t = torch.rand(B, dtype=torch.float64) * 0.9 + 0.1
    y = torch.randint(0, 3, (B,))
    with torch.no_grad():
        u = net(z, t, t, y)
        x_hat = inner(z, t, t, y)
    torch.testing.assert_close(z - t[:, None] * u, x_hat, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="backbone.prediction"):
        apply_prediction(inner, "eps")


def test_pmf_config_sets_x_prediction_and_a_bad_prediction_is_one_sentence(tmp_path, capsys):
    import yaml
    from pathlib import Path

    from test_cli import TINY, flowzoo

    cfg = yaml.safe_load((Path(__file__).parent.parent / "configs" / "objective" / "pmf.yaml").read_text())
    assert cfg["backbone"]["prediction"] == "x"
    code, out, err = flowzoo("run", "--objective", "pmf", "--steps", "2", "--batch-size", "8",
                             "--out", str(tmp_path / "bad"), "--set", "backbone.prediction=eps", *TINY, capsys=capsys)
    assert code == 2 and "backbone.prediction must be one of u, x" in err + out
    assert "Traceback" not in err + out


# --- distillation -------------------------------------------------------------------------------------

def test_distillation_regresses_onto_a_teacher_run(tmp_path, capsys):
    """A flowzoo flow-matching run is a teacher: with objective.distill its velocity v_T(z_t, t) replaces
    e - x as anchor and tangent (MeanFlow: u_tgt = v_T - (t - r) d/dt u- along (v_T, 0, 1)), the teacher is
    not trained, and a student run from it trains end to end."""
    from flowzoo.pipeline.sample import load_run
    from test_cli import TINY, flowzoo

    teacher_dir = tmp_path / "teacher"
    code, _, _ = flowzoo("run", "--objective", "flow_matching", "--steps", "10", "--batch-size", "16",
                         "--out", str(teacher_dir), "--set", "eval.num_samples=300", *TINY, capsys=capsys)
    assert code == 0
    checkpoint = teacher_dir / "checkpoints" / "latest.pt"
    teacher, dataset, _, _ = load_run(checkpoint, 0)
    teacher = teacher.double()

    student = TinyVelocityNet(dim=64, num_classes=10).double()
    objective = create_objective("meanflow", student, label_dropout=0.0, distill=str(checkpoint))
    objective.shift.net = objective.shift.net.double()
    teacher_params = {id(p) for p in objective.shift.net.parameters()}
    assert not teacher_params & {id(p) for p in objective.parameters()}
    g = torch.Generator().manual_seed(0)
    x, e = torch.randn(2, B, 64, generator=g, dtype=torch.float64)
    t = torch.rand(B, generator=g, dtype=torch.float64) * 0.9 + 0.05
    r = t * torch.rand(B, generator=g, dtype=torch.float64)
    r[:3] = t[:3]
    y = torch.randint(0, 10, (B,), generator=g)
    terms = _terms(objective, x, e, t, r, y)
    z_t = (1 - t)[:, None] * x + t[:, None] * e
    with torch.no_grad():
        v_teacher = teacher(z_t, t, torch.zeros_like(t), y)
    expected = v_teacher - (t - r)[:, None] * _total_derivative(student, y, z_t, r, t, v_teacher)
    torch.testing.assert_close(terms.target.u_tgt, expected, rtol=1e-10, atol=1e-12)

    code, out, err = flowzoo("run", "--objective", "meanflow", "--steps", "4", "--batch-size", "16",
                             "--out", str(tmp_path / "student"), "--set", f"objective.distill={checkpoint}",
                             "--set", "eval.num_samples=300", *TINY, capsys=capsys)
    assert code == 0, err
    code, out, err = flowzoo("run", "--objective", "meanflow", "--steps", "4", "--out", str(tmp_path / "s2"),
                             "--set", f"objective.distill={tmp_path / 'missing.pt'}", *TINY, capsys=capsys)
    assert code == 2 and "does not exist" in err + out and "Traceback" not in err + out


def test_distilling_a_preset_with_its_own_shift_velocity_is_refused():
    with pytest.raises(ValueError, match="distil a preset whose shift is 'data'"):
        create_objective("shortcut", _net(), distill="teacher.pt")


def test_jvp_spec_takes_the_backends_options_and_refuses_others():
    backend = get_jvp_backend({"name": "finite_difference", "eps": 0.01})
    net = _net()
    z = torch.randn(B, D, dtype=torch.float64)
    t = torch.rand(B, dtype=torch.float64) * 0.5 + 0.25
    r = t * 0.5
    y = torch.randint(0, 3, (B,))
    w = torch.randn(B, D, dtype=torch.float64)
    _, d = backend(_u(net, y), z, r, t, w)
    torch.testing.assert_close(d, _total_derivative(net, y, z, r, t, w), rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="takes no option"):
        get_jvp_backend({"name": "finite_difference", "step": 0.01})
    with pytest.raises(ValueError, match="needs a name"):
        get_jvp_backend({"eps": 0.01})


def test_splitmeanflow_is_an_out_of_tree_plugin_recorded_in_provenance(tmp_path, capsys):
    """examples/flowzoo-splitmeanflow (installed by the Makefile) adds the objective through its entry
    point alone; a run with it trains and records the plugin's distribution and version."""
    import json

    from flowzoo.registry import OBJECTIVES
    from test_cli import TINY, flowzoo

    entry = OBJECTIVES.entry("splitmeanflow")
    assert entry.source == "flowzoo-splitmeanflow" and entry.version == "0.1.0"
    code, _, err = flowzoo("run", "--objective", "splitmeanflow", "--steps", "4", "--batch-size", "16",
                           "--out", str(tmp_path / "run"), "--set", "eval.num_samples=300", *TINY, capsys=capsys)
    assert code == 0, err
    provenance = json.loads((tmp_path / "run" / "result.json").read_text())["provenance"]
    assert provenance["plugins"]["objective:splitmeanflow"] == {"dist": "flowzoo-splitmeanflow", "version": "0.1.0"}
