"""torch.compile of the objective with the JVP inside: compiled tangents and gradients equal eager ones.

pytorch #192985 reports silently wrong forward-mode tangents under torch.compile; flowzoo compiles the
whole objective module (train.compile), JVP included, so this pins that on this torch the compiled
MeanFlow step (alpha = 0: u_tgt = v - (t - r) du/dt) gives eager's du/dt, loss and parameter gradients,
for both analytic forward-mode backends, and the alpha-Flow two-point step likewise. On CUDA the same
check runs in benchmarks/gpu_check.sh. A small DiT (one block) keeps the CPU compile to seconds."""

import pytest
import torch

from flowzoo.backbones.dit import DiT
from flowzoo.objectives import create_objective

B = 8


def _net():
    torch.manual_seed(0)
    net = DiT(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=1, num_heads=2,
              num_classes=10, frequency_embedding_size=32)
    with torch.no_grad():  # adaLN-Zero starts at u = 0: tangents and gradients would be trivially equal
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return net


def _step(loss_terms, net, x, drawn):
    loss, terms = loss_terms(x, drawn, 0)
    grads = torch.autograd.grad(loss, [p for p in net.parameters() if p.requires_grad])
    return loss, terms.target.u_tgt, terms.target.du_dt, grads


@pytest.mark.parametrize("preset, spec", [
    ("meanflow", {"jvp": "forward"}),
    ("meanflow", {"jvp": "functorch"}),
    ("alphaflow", {"alpha": 0.5}),
])
def test_compiled_objective_matches_eager(preset, spec):
    torch._dynamo.reset()
    net = _net()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(B, 1, 8, 8, generator=g), torch.randint(0, 10, (B,), generator=g)
    objective = create_objective(preset, net, label_dropout=0.0, fm_ratio=0.0, **spec)
    drawn = objective.draw(x, y, 0, torch.Generator().manual_seed(2))

    # loss_terms is what the module's forward (the thing train.compile compiles) runs after its draws;
    # compiling it directly returns the tangent du/dt as well, so it can be compared.
    eager = _step(objective.loss_terms, net, x, drawn)
    compiled = _step(torch.compile(objective.loss_terms), net, x, drawn)

    loss_e, u_e, du_e, grads_e = eager
    loss_c, u_c, du_c, grads_c = compiled
    if preset == "meanflow":
        assert du_e.abs().max() > 1e-3  # the tangent is not trivially zero
        torch.testing.assert_close(du_c, du_e, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(u_c, u_e, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-7)
    for a, b in zip(grads_c, grads_e):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
