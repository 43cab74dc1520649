"""objective.target_precision: the target's network calls in bf16, everything else in fp32 (issue 16, item 3).

Checked against independent computations: the bf16 target equals the target formula evaluated by hand
on bf16-autocast network outputs; alpha = 1 has no network call, so both precisions must agree exactly;
fp32 (the default) is untouched by the option."""

import pytest
import torch

from flowzoo.backbones import create_backbone
from flowzoo.config import ConfigError
from flowzoo.objectives import create_objective

B = 8


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    net = create_backbone("DiT-tiny/2", input_size=8, in_channels=1, num_classes=10)
    with torch.no_grad():  # adaLN-Zero starts at u = 0, which would make every comparison trivial
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    return net


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 1, 8, 8, generator=g), torch.randint(0, 10, (B,), generator=g)


def _terms(net, preset, precision, x, y, **overrides):
    objective = create_objective(preset, net, label_dropout=0.0, fm_ratio=0.0, target_precision=precision, **overrides)
    drawn = objective.draw(x, y, 0, torch.Generator().manual_seed(2))
    return objective.loss_terms(x, drawn, 0)


def _rel(a, b):
    return float((a - b).norm() / a.norm())


def test_two_point_target_in_bf16_is_the_formula_on_bf16_network_outputs(dit, batch):
    x, y = batch
    loss, t16 = _terms(dit, "alphaflow", "bf16", x, y, alpha=0.5)
    _, t32 = _terms(dit, "alphaflow", "fp32", x, y, alpha=0.5)
    assert t16.target.u_tgt.dtype == torch.float32 and loss.dtype == torch.float32
    # By hand: s = (r + t) / 2, z_s = z_t - (t - s) v, u_tgt = v / 2 + u(z_s, r, s) / 2 with u under bf16 autocast.
    t, r, v = t16.t, t16.r, t16.v_shift
    z_t = x + t[:, None, None, None] * v  # (1 - t) x + t e with e = x + v
    s = 0.5 * r + 0.5 * t
    z_s = z_t - (t - s)[:, None, None, None] * v
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        u_next = dit(z_s, s, s - r, y).float()
    by_hand = 0.5 * v + 0.5 * u_next
    torch.testing.assert_close(t16.target.u_tgt, by_hand, rtol=0, atol=1e-6)
    # And it is a bf16-sized perturbation of the fp32 target: visible, but at bf16's ~2^-8 relative scale.
    assert 1e-5 < _rel(t32.target.u_tgt, t16.target.u_tgt) < 2e-2


def test_jvp_target_in_bf16_stays_close_and_in_fp32(dit, batch):
    x, y = batch
    _, t16 = _terms(dit, "meanflow", "bf16", x, y)
    _, t32 = _terms(dit, "meanflow", "fp32", x, y)
    assert t16.target.du_dt.dtype == torch.float32
    net_rel = _rel(t32.target.du_dt, t16.target.du_dt)
    assert 1e-5 < net_rel < 5e-2  # the JVP itself ran in bf16 (not a no-op) and kept bf16 accuracy


def test_alpha_one_has_no_network_call_so_precisions_agree_exactly(dit, batch):
    x, y = batch
    _, t16 = _terms(dit, "trajectory_fm", "bf16", x, y)
    _, t32 = _terms(dit, "trajectory_fm", "fp32", x, y)
    assert torch.equal(t16.target.u_tgt, t32.target.u_tgt)


def test_prediction_and_its_gradient_stay_fp32(dit, batch):
    """Only the target changes: with the same target, the loss and its gradient are the fp32 ones."""
    x, y = batch
    loss16, t16 = _terms(dit, "alphaflow", "bf16", x, y, alpha=0.5)
    _, t32 = _terms(dit, "alphaflow", "fp32", x, y, alpha=0.5)
    assert t16.pred.dtype == torch.float32
    torch.testing.assert_close(t16.pred, t32.pred, rtol=0, atol=0)


@pytest.mark.parametrize("spec, words", [
    ({"target_precision": "fp16"}, "must be one of auto, fp32, bf16"),
    ({"target_precision": "bf16", "jvp": "finite_difference"}, "cannot take a finite-difference JVP"),
])
def test_refused_in_one_sentence(dit, spec, words):
    with pytest.raises(ConfigError, match=words) as info:
        create_objective("meanflow", dit, **spec)
    assert "\n" not in str(info.value)


def test_default_is_fp32_and_leaves_the_config_hash_alone():
    from flowzoo.config import config_hash, resolve

    cfg = resolve(objective="meanflow", data="digits")
    assert "target_precision" not in cfg["objective"]  # omitted at its default: old records stay valid
    with_it = resolve(objective="meanflow", data="digits", sets=["objective.target_precision=bf16"])
    assert config_hash(with_it) != config_hash(cfg)


def test_auto_follows_the_training_steps_autocast(dit, batch):
    x, y = batch
    _, t32 = _terms(dit, "alphaflow", "fp32", x, y, alpha=0.5)
    _, t16 = _terms(dit, "alphaflow", "bf16", x, y, alpha=0.5)
    _, auto_plain = _terms(dit, "alphaflow", "auto", x, y, alpha=0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, auto_bf16 = _terms(dit, "alphaflow", "auto", x, y, alpha=0.5)
    assert torch.equal(auto_plain.target.u_tgt, t32.target.u_tgt)  # no autocast around the step: fp32
    assert torch.equal(auto_bf16.target.u_tgt, t16.target.u_tgt)  # a bf16 step: the bf16 target


def test_auto_keeps_a_finite_difference_jvp_in_fp32(dit, batch):
    x, y = batch
    _, t32 = _terms(dit, "meanflow", "fp32", x, y, jvp="finite_difference")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, auto = _terms(dit, "meanflow", "auto", x, y, jvp="finite_difference")
    assert torch.equal(auto.target.du_dt, t32.target.du_dt)
