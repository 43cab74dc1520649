"""Video DiT: shapes, preset sizes, conditioning, JVP vs finite difference, training and sampling on clips;
the pipeline pieces for video samples (build_network, sample figures)."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel

from flowzoo.backbones import VideoDiT, create_backbone, list_backbones
from flowzoo.backbones.embed import sincos_pos_embed_3d
from flowzoo.config import ConfigError
from flowzoo.objectives import create_objective
from flowzoo.objectives.jvp import get_jvp_backend
from flowzoo.pipeline.evaluate import generate, write_samples_figure
from flowzoo.pipeline.run import build_network
from flowzoo.samplers import sample

CLIP = (3, 4, 16, 16)  # (C, F, H, W)
MODES = ("full", "factorised")


def tiny(attention="full", **kw) -> VideoDiT:
    args = dict(input_size=16, num_frames=4, in_channels=3, num_classes=3, attention=attention)
    return create_backbone("VideoDiT-tiny/4", **{**args, **kw})


def randomize(net: torch.nn.Module, std: float = 0.05) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, std)


@pytest.mark.parametrize("attention", MODES)
@pytest.mark.parametrize("shape, patch, tokens", [(CLIP, 4, 2 * 4 * 4), ((4, 4, 8, 12), 2, 2 * 4 * 6)])
def test_shapes_tokens_and_zero_init(attention, shape, patch, tokens):
    c, f, h, w = shape
    net = create_backbone(f"VideoDiT-tiny/{patch}", input_size=(h, w), num_frames=f, in_channels=c, num_classes=3,
                          attention=attention)
    assert net.sample_shape == shape and net.num_tokens == tokens
    z = torch.randn(2, *shape)
    assert torch.equal(net(z, torch.rand(2), torch.rand(2)), torch.zeros_like(z))  # adaLN-Zero
    randomize(net)
    out = net(z, torch.rand(2), torch.rand(2), torch.tensor([0, 3]))
    assert out.shape == z.shape and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "name, kwargs, attention, tokens, params",
    [
        # pixel clips 16x64x64, 700 Kinetics classes: 8 x 16 x 16 tubelets of 2x4x4
        ("VideoDiT-S/4", dict(input_size=64, num_frames=16, in_channels=3, num_classes=700), "full", 2048, 33_051_744),
        ("VideoDiT-S/4", dict(input_size=64, num_frames=16, in_channels=3, num_classes=700), "factorised", 2048, 45_470_304),
        ("VideoDiT-B/4", dict(input_size=64, num_frames=16, in_channels=3, num_classes=700), "full", 2048, 130_984_032),
        ("VideoDiT-B/4", dict(input_size=64, num_frames=16, in_channels=3, num_classes=700), "factorised", 2048, 180_593_760),
        # SD-VAE latent clips 4x16x8x8 and 4x16x16x16: tubelets of 2x2x2
        ("VideoDiT-S/2", dict(input_size=8, num_frames=16, in_channels=4, num_classes=700), "full", 128, 33_002_528),
        ("VideoDiT-B/2", dict(input_size=16, num_frames=16, in_channels=4, num_classes=700), "full", 512, 130_885_664),
    ],
)
def test_preset_sizes(name, kwargs, attention, tokens, params):
    with torch.device("meta"):
        net = create_backbone(name, attention=attention, **kwargs)
    assert net.num_tokens == tokens
    assert sum(p.numel() for p in net.parameters()) == params
    # The image DiT's size plus a 3-D patch embedding and a tubelet-sized output layer; factorised adds
    # per block one attention (4 D^2 + 4 D) and three adaLN rows (3 D^2 + 3 D).
    if attention == "factorised":
        d, depth = net.final_layer.linear.in_features, len(net.blocks)
        with torch.device("meta"):
            full = create_backbone(name, **kwargs)
        assert params - sum(p.numel() for p in full.parameters()) == depth * 7 * (d * d + d)


def test_factorised_attends_within_frames_then_across_frames():
    net = tiny("factorised", depth=1)
    seen = {}
    block = net.blocks[0]
    block.attn.register_forward_hook(lambda m, args, out: seen.__setitem__("space", tuple(args[0].shape)))
    block.attn_temporal.register_forward_hook(lambda m, args, out: seen.__setitem__("time", tuple(args[0].shape)))
    net(torch.randn(2, *CLIP), 0.5, 0.1)
    d = net.pos_embed.shape[-1]
    assert seen == {"space": (2 * 2, 16, d), "time": (2 * 16, 2, d)}  # (B*T, S, D) and (B*S, T, D)


def test_registry_and_argument_errors():
    assert {f"VideoDiT-{s}/{p}" for s in ("tiny", "S", "B", "L", "XL") for p in (1, 2, 4, 8)} <= set(list_backbones("VideoDiT-*"))
    with pytest.raises(ValueError, match="num_frames 5 is not divisible by tubelet_size 2"):
        tiny(num_frames=5)
    with pytest.raises(ValueError, match="not divisible by patch_size 4"):
        tiny(input_size=10)
    with pytest.raises(ValueError, match="attention must be one of"):
        tiny(attention="axial")
    assert tiny(attention="factorized").attention == "factorised"


@pytest.mark.parametrize("attention", MODES)
def test_conditioning_changes_output(attention):
    torch.manual_seed(0)
    net = tiny(attention)
    randomize(net)
    z = torch.randn(2, *CLIP)
    t, h, y = torch.tensor([0.8, 0.4]), torch.tensor([0.3, 0.0]), torch.tensor([0, 1])
    with torch.no_grad():
        base = net(z, t, h, y)
        assert not torch.allclose(base, net(z, t + 0.1, h, y))
        assert not torch.allclose(base, net(z, t, h + 0.1, y))
        assert not torch.allclose(base, net(z, t, h, torch.tensor([2, 3])))  # 3 = null label
        assert torch.equal(net(z, t, h, None), net(z, t, h, torch.tensor([3, 3])))


def test_pos_embed_sincos_buffer_or_learned_parameter():
    fixed, learned = tiny(), tiny(pos_embed="learned")
    assert "pos_embed" not in fixed.state_dict() and "pos_embed" in dict(learned.named_parameters())
    torch.testing.assert_close(learned.pos_embed.detach(), fixed.pos_embed)
    code = sincos_pos_embed_3d(128, (2, 4, 4))
    assert code.shape == (32, 128) and torch.unique(code, dim=0).shape[0] == 32  # every token distinct
    assert not torch.equal(code[:16, :32], code[16:, :32])  # the time channels differ between frames
    assert torch.equal(code[:16, 32:], code[16:, 32:])  # the space channels repeat in every frame


@pytest.mark.parametrize("attention", MODES)
def test_jvp_matches_float64_finite_difference(attention):
    """d/dt u(z + t v, r, t) by torch.func.jvp and by the repo's JVP backends vs a central difference."""
    torch.manual_seed(0)
    net = tiny(attention).double()
    randomize(net)
    z = torch.randn(2, *CLIP, dtype=torch.float64)
    v = torch.randn_like(z)
    t = torch.tensor([0.7, 0.3], dtype=torch.float64)
    r = torch.tensor([0.2, 0.0], dtype=torch.float64)
    y = torch.tensor([1, 3])

    def u(z_, r_, t_):
        return net(z_, t_, t_ - r_, y)

    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        out, du_dt = torch.func.jvp(lambda z_, t_: u(z_, r, t_), (z, t), (v, torch.ones_like(t)))
    _, fd = get_jvp_backend("finite_difference")(u, z, r, t, v, eps=1e-6)
    assert du_dt.abs().max() > 0
    torch.testing.assert_close(out, u(z, r, t))
    torch.testing.assert_close(du_dt, fd, rtol=1e-5, atol=1e-5 * fd.abs().max().item())
    for backend in ("forward", "double_backward"):
        _, d = get_jvp_backend(backend)(u, z, r, t, v)
        torch.testing.assert_close(d, du_dt, rtol=1e-9, atol=1e-9 * du_dt.abs().max().item())


def moving_blobs(n: int, seed: int) -> torch.Tensor:
    """Clips in [-1, 1] of a bright square moving right by one pixel a frame on a dark background."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, *CLIP), -0.8)
    start = torch.randint(0, 8, (n, 2), generator=g)
    for i in range(n):
        for f in range(CLIP[1]):
            r0, c0 = start[i, 0], start[i, 1] + f
            x[i, :, f, r0:r0 + 6, c0:c0 + 6] = 0.8
    return x


@pytest.mark.parametrize("objective_name, attention", [("alphaflow", "full"), ("meanflow", "factorised")])
def test_few_training_steps_then_sample(objective_name, attention):
    torch.manual_seed(0)
    net = tiny(attention, num_classes=2)
    steps = 12
    objective = create_objective(objective_name, net, total_steps=steps)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x, y = moving_blobs(8, 0), torch.tensor([0, 1] * 4)
    mses = []
    for step in range(steps):  # the same batch and draws every step: the fit must improve
        loss, metrics = objective(x, y, step=step, generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        opt.step()
        mses.append(float(metrics["mse"]))
    assert all(math.isfinite(m) for m in mses)
    assert min(mses[-3:]) < mses[0], mses
    net.eval()
    with torch.no_grad():
        for nfe in (1, 2):
            out = sample("meanflow", net, torch.randn(3, *CLIP), nfe=nfe, cond=torch.tensor([0, 1, 2]))
            assert out.shape == (3, *CLIP) and torch.isfinite(out).all()


def test_gradient_checkpointing_same_gradients_factorised():
    torch.manual_seed(0)
    net = tiny("factorised")
    randomize(net)
    ckpt = tiny("factorised", gradient_checkpointing=True)
    ckpt.load_state_dict(net.state_dict())
    z, t = torch.randn(2, *CLIP), torch.rand(2)
    grads = []
    for model in (net, ckpt):
        model.train()
        model(z, t, t / 2).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


class FakeVideo:
    name, num_classes = "fake_video", 3

    def __init__(self, shape=CLIP):
        self.sample_shape = shape


def test_build_network_sizes_video_backbones_from_the_data():
    net = build_network({"name": "VideoDiT-tiny/4", "attention": "factorised"}, FakeVideo(), seed=0)
    assert net.sample_shape == CLIP and net.num_classes == 3 and net.attention == "factorised"
    assert build_network({"name": "VideoDiT-tiny/4"}, FakeVideo((3, 4, 16, 24)), seed=0).sample_shape == (3, 4, 16, 24)
    with pytest.raises(ConfigError, match="VideoDiT"):
        build_network({"name": "DiT-tiny/2"}, FakeVideo(), seed=0)
    with pytest.raises(ConfigError, match="takes video clips"):
        build_network({"name": "VideoDiT-tiny/4"}, FakeVideo((3, 16, 16)), seed=0)


def test_samples_figure_for_clips_png_strips_and_gif(tmp_path):
    net = build_network({"name": "VideoDiT-tiny/4"}, FakeVideo(), seed=0)
    x, labels = generate(net, FakeVideo(), "meanflow", 1, 5, seed=0, batch_size=None)
    assert x.shape == (5, *CLIP) and labels.tolist() == [0, 1, 2, 0, 1]
    png = write_samples_figure(moving_blobs(3, 0), FakeVideo(), tmp_path / "clips.png")
    with Image.open(png) as img:  # 3 rows of 4 frames, 16 px frames shown 4x, 1 px separators
        assert img.size == ((4 * 17 + 1) * 4, (3 * 17 + 1) * 4)
    with Image.open(tmp_path / "clips.gif") as gif:
        assert gif.n_frames == CLIP[1]

    class Latents(FakeVideo):  # latent clips: shown decoded to uint8 pixels
        def decode_video(self, z):
            return ((moving_blobs(len(z), 1) + 1) * 127.5).round().to(torch.uint8)

    write_samples_figure(torch.zeros(2, 4, 4, 8, 8), Latents((4, 4, 8, 8)), tmp_path / "latents.png")
    assert (tmp_path / "latents.png").is_file() and (tmp_path / "latents.gif").is_file()
