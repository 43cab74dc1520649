"""Every registered backbone follows the contract; DiT matches the paper's sizes and is JVP-able."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from flowzoo.backbones import create_backbone, list_backbones
from flowzoo.registry import BACKBONES

NAMES = BACKBONES.names()
BIG = tuple(f"{kind}-{size}/" for kind in ("DiT", "VideoDiT") for size in ("S", "B", "L", "XL"))


def small_kwargs(name: str) -> dict:
    """Arguments that make a CPU-sized instance of any built-in (8x8 inputs suit every patch size)."""
    if name.startswith("VideoDiT-"):  # 4 frames of 8x8: two tubelets in time
        return dict(input_size=8, num_frames=4, in_channels=3, num_classes=5)
    if name.startswith("DiT-"):
        return dict(input_size=8, in_channels=3, num_classes=5)
    return dict(num_classes=5)


def randomize(net: torch.nn.Module, std: float = 0.05) -> None:
    """Replace the zero init so outputs and derivatives are non-trivial."""
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, std)


@pytest.mark.parametrize("name", NAMES)
def test_contract(name):
    if name.startswith(BIG):  # too slow to run on CPU here: check that it builds, on the meta device
        frames = dict(num_frames=16) if name.startswith("VideoDiT-") else {}
        with torch.device("meta"):
            net = create_backbone(name, input_size=32, in_channels=4, num_classes=1000, **frames)
        assert net.sample_shape == (4, *frames.values(), 32, 32) and net.num_classes == 1000
        return
    torch.manual_seed(0)
    net = create_backbone(name, **small_kwargs(name))
    assert isinstance(net.num_classes, int) and isinstance(net.sample_shape, tuple)
    randomize(net)
    z = torch.randn(3, *net.sample_shape, requires_grad=True)
    t = torch.rand(3)
    y = torch.tensor([0, net.num_classes, 2])
    out = net(z, t, t * 0.5, y)
    assert out.shape == z.shape and torch.isfinite(out).all()
    out.square().sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())
    # y=None is the null label; scalar times broadcast over the batch.
    with torch.no_grad():
        null = torch.full((3,), net.num_classes)
        assert torch.equal(net(z, t, t * 0.5, None), net(z, t, t * 0.5, null))
        assert torch.allclose(net(z, 0.3, 0.1), net(z, torch.full((3,), 0.3), torch.full((3,), 0.1)))


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith(BIG)])
def test_output_is_zero_at_init(name):
    net = create_backbone(name, **small_kwargs(name))
    z = torch.randn(2, *net.sample_shape)
    assert torch.equal(net(z, torch.rand(2), torch.rand(2)), torch.zeros_like(z))


def test_unconditional_has_only_null_label():
    net = create_backbone("mlp", num_classes=0)
    assert net.cond_embedder.y_embedder.embedding_table.num_embeddings == 1
    z = torch.randn(4, 2)
    assert torch.equal(net(z, 0.5, 0.0, torch.zeros(4, dtype=torch.long)), net(z, 0.5, 0.0))


def test_mlp_flattens_images():
    net = create_backbone("mlp", sample_shape=(1, 8, 8), num_classes=10)
    randomize(net)
    z = torch.randn(2, 1, 8, 8)
    assert net(z, 0.5, 0.2, torch.tensor([3, 10])).shape == z.shape
    assert create_backbone("mlp", input_size=8, in_channels=1).sample_shape == (1, 8, 8)


@pytest.mark.parametrize(
    "name, expected, published",
    [
        # published DiT (one t embedder, 8 output channels, pos_embed counted as a parameter) ->
        # + h embedder, 4 output channels, pos_embed a buffer.
        ("DiT-B/2", 131_091_472, 130_512_416),
        ("DiT-XL/2", 676_440_592, 675_129_632),
    ],
)
def test_parameter_counts(name, expected, published):
    with torch.device("meta"):
        net = create_backbone(name, input_size=32, in_channels=4, num_classes=1000)
    count = sum(p.numel() for p in net.parameters())
    assert count == expected
    assert abs(count - published) / published < 0.01


def test_registry_sizes_and_patterns():
    assert set(list_backbones("DiT-XL/*")) == {f"DiT-XL/{p}" for p in (1, 2, 4, 8)}
    for size in ("tiny", "S", "B", "L", "XL"):
        assert f"DiT-{size}/2" in NAMES
    with pytest.raises(TypeError, match="does not accept"):
        create_backbone("DiT-tiny/2", not_an_argument=1)
    with pytest.raises(ValueError, match="divisible"):
        create_backbone("DiT-tiny/8", input_size=12)


def test_jvp_matches_finite_difference_with_math_attention():
    """d/dt u(z + t v, r, t) via torch.func.jvp equals a central difference (float64)."""
    torch.manual_seed(0)
    net = create_backbone("DiT-tiny/2", input_size=8, in_channels=2, num_classes=3).double()
    randomize(net)
    assert all(block.attn.fused_attn for block in net.blocks)  # the F.scaled_dot_product_attention path
    z = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    v = torch.randn_like(z)
    t = torch.tensor([0.7, 0.3], dtype=torch.float64)
    r = torch.tensor([0.2, 0.0], dtype=torch.float64)
    y = torch.tensor([1, 3])

    def u(z_, t_):
        return net(z_, t_, t_ - r, y)

    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        out, du_dt = torch.func.jvp(u, (z, t), (v, torch.ones_like(t)))
        eps = 1e-6
        fd = (u(z + eps * v, t + eps) - u(z - eps * v, t - eps)) / (2 * eps)
    assert torch.allclose(out, u(z, t))
    assert du_dt.abs().max() > 0
    torch.testing.assert_close(du_dt, fd, rtol=1e-5, atol=1e-5 * fd.abs().max().item())


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(0)
    net = create_backbone("DiT-tiny/4", input_size=8, in_channels=1, num_classes=2)
    randomize(net)
    ckpt = create_backbone("DiT-tiny/4", input_size=8, in_channels=1, num_classes=2, gradient_checkpointing=True)
    ckpt.load_state_dict(net.state_dict())
    z, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    grads = []
    for model in (net, ckpt):
        model.train()
        model(z, t, t / 2).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])
