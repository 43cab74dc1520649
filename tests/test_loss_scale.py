"""The training log's error is on one scale whatever the weighting, and the progress output says when the
objective switches branch (alpha reaching 0 turns the JVP on)."""

import torch

from flowzoo.objectives import ObjectiveConfig, UnifiedObjective
from flowzoo.train import TrainOptions, train
from test_train_support import MixtureStream, tiny_mlp


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)


def test_mse_is_the_unweighted_per_element_error_whatever_the_weighting():
    net = tiny_mlp()
    x, y = batch()
    config = ObjectiveConfig(alpha=1.0, fm_ratio=1.0, label_dropout=0.0)
    uniform = UnifiedObjective(net, config)
    adaptive = UnifiedObjective(net, config.replace(weighting={"name": "alpha_adaptive", "c": 1e-3, "p": 1.0}))
    drawn = uniform.draw(x, y, 0, torch.Generator().manual_seed(1))
    _, m_uniform = uniform.loss(x, drawn, 0)
    _, m_adaptive = adaptive.loss(x, drawn, 0)
    # Independently: flow matching's target is v = e - x; the net is called as net(z, t, t - r, y) with r = t.
    z = (1 - drawn.t).view(-1, 1, 1, 1) * x + drawn.t.view(-1, 1, 1, 1) * drawn.noise
    with torch.no_grad():
        u = net(z, drawn.t, torch.zeros_like(drawn.t), y)
    expected = (u - (drawn.noise - x)).pow(2).mean()
    assert torch.allclose(m_uniform["mse"], expected, atol=1e-6)
    assert torch.allclose(m_adaptive["mse"], expected, atol=1e-6)
    # The weighted loss is on another scale: the adaptive weight pulls it towards 1.
    assert abs(float(m_adaptive["loss"]) - float(expected)) > 0.1


def test_target_branch_follows_the_alpha_schedule():
    net = tiny_mlp()
    step = UnifiedObjective(net, ObjectiveConfig(alpha={"name": "step", "before": 1.0, "after": 0.0, "k": 2}))
    assert step.target_branch(1).startswith("flow-matching target")
    assert step.target_branch(2).startswith("MeanFlow JVP target")
    linear = UnifiedObjective(net, ObjectiveConfig(alpha=0.5))
    assert linear.target_branch(0).startswith("two-point target")


def test_the_progress_output_says_when_alpha_reaches_zero(tmp_path, capsys):
    net = tiny_mlp()
    objective = UnifiedObjective(net, ObjectiveConfig(alpha={"name": "step", "before": 1.0, "after": 0.0, "k": 2}))
    opts = TrainOptions(out_dir=str(tmp_path / "run"), steps=4, batch_size=8, warmup_steps=1, log_every=1,
                        checkpoint_every=4, sample_every=100, ema_halflives=[10.0], quiet=False)
    train(opts, net, objective, MixtureStream(8, 0))
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if "switches to" in line]
    assert notes == ["step 2: the objective switches to the MeanFlow JVP target (alpha = 0, jvp forward)"]
    assert "mse " in out and "weighted loss " in out
    import json
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in lines] == [1, 2, 3, 4] and all(r["mse"] > 0 for r in lines)
