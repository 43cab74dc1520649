"""Every registered sampler recovers data exactly where the average velocity is known in closed form."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from flowzoo.registry import SAMPLERS
from flowzoo.samplers import sample, time_grid

NAMES = SAMPLERS.names()


class PointMass(nn.Module):
    """Exact u for data that is one point x0 (per class): z_t = (1 - t) x0 + t e moves on a straight
    line, so u(z_t, r, t) = e - x0 = (z_t - x0) / t for every r. Label ``num_classes`` (null) maps to
    its own point, so conditional and unconditional velocities differ."""

    def __init__(self, points: Tensor):
        super().__init__()
        self.register_buffer("points", points)  # (num_classes + 1, *sample_shape), last row = null
        self.num_classes = points.shape[0] - 1
        self.sample_shape = tuple(points.shape[1:])
        self.calls = 0

    def forward(self, z: Tensor, t: Tensor, h: Tensor, y: Tensor | None = None) -> Tensor:
        self.calls += 1
        assert t.shape == h.shape == (z.shape[0],) and (h >= 0).all() and (h <= t).all()
        assert (t > 0).all(), "no sampler should evaluate the network at t = 0"
        if y is None:
            y = torch.full((z.shape[0],), self.num_classes, dtype=torch.long)
        x0 = self.points[y]
        return (z - x0) / t.view(-1, *[1] * (z.dim() - 1))


def point_model(shape=(3, 4, 4), num_classes=0, seed=0) -> PointMass:
    g = torch.Generator().manual_seed(seed)
    return PointMass(torch.randn(num_classes + 1, *shape, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_recovers_point_mass(name, steps):
    model = point_model()
    noise = torch.randn(6, *model.sample_shape, dtype=torch.float64)
    x = SAMPLERS.get(name)(model, noise, time_grid(steps), generator=torch.Generator().manual_seed(0))
    assert x.shape == noise.shape
    torch.testing.assert_close(x, model.points[0].expand_as(x))


@pytest.mark.parametrize("name", NAMES)
def test_class_conditional_points_and_tensor_grid(name):
    model = point_model(shape=(2,), num_classes=3)
    cond = torch.tensor([0, 1, 2, 3, 2])
    noise = torch.randn(5, 2, dtype=torch.float64)
    x = SAMPLERS.get(name)(model, noise, torch.tensor([1.0, 0.6, 0.0]), cond=cond)
    torch.testing.assert_close(x, model.points[cond])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_guidance_formula(name, w):
    """Straight-line u is affine in x0, so guided sampling lands on x_null + w (x_cond - x_null)."""
    model = point_model(shape=(2,), num_classes=2)
    cond = torch.tensor([0, 1, 1])
    noise = torch.randn(3, 2, dtype=torch.float64)
    x = SAMPLERS.get(name)(model, noise, [1.0, 0.5, 0.0], cond=cond, guidance=w)
    null = model.points[model.num_classes]
    torch.testing.assert_close(x, null + w * (model.points[cond] - null))


def test_guidance_one_step_velocity():
    """One meanflow step is x = e - u: check the guided u directly on a generic (non-point) model."""

    class Affine(nn.Module):
        num_classes, sample_shape = 2, (3,)

        def forward(self, z, t, h, y):
            return z * (1 + y[:, None].double()) + t[:, None] - h[:, None] ** 2

    model, e = Affine(), torch.randn(4, 3, dtype=torch.float64)
    cond, null = torch.tensor([0, 1, 0, 1]), torch.full((4,), 2)
    t, h = torch.ones(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    u_c, u_n = model(e, t, h, cond), model(e, t, h, null)
    x = sample("meanflow", model, e, nfe=1, cond=cond, guidance=3.0)
    torch.testing.assert_close(x, e - (u_n + 3.0 * (u_c - u_n)))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_given_generator(name):
    torch.manual_seed(0)

    class Wobbly(nn.Module):
        num_classes, sample_shape = 0, (4,)

        def forward(self, z, t, h, y=None):  # nonlinear, so the fresh noise changes the result
            return torch.sin(3 * z) * t[:, None] + h[:, None]

    model = Wobbly()
    noise = torch.randn(8, 4)
    runs = [sample(name, model, noise, nfe=4, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1])
    if name == "consistency":  # the only sampler here that draws fresh noise
        assert not torch.equal(runs[0], runs[2])


def test_nfe_counts_and_grids():
    assert time_grid(1) == [1.0, 0.0]
    assert time_grid(2) == [1.0, 0.5, 0.0]
    assert time_grid([1, 0.25, 0]) == [1.0, 0.25, 0.0]
    for name, nfe in [("meanflow", 1), ("meanflow", 2), ("consistency", 3), ("euler", 4), ("heun", 5)]:
        model = point_model(shape=(2,))
        sample(name, model, torch.randn(2, 2, dtype=torch.float64), nfe=nfe)
        assert model.calls == nfe, name
    model = point_model(shape=(2,))
    sample("heun", model, torch.randn(2, 2, dtype=torch.float64), times=[1.0, 0.5, 0.0])
    assert model.calls == 3  # 2 steps: Heun then Euler to t = 0


@pytest.mark.parametrize("bad", [[1.0], [0.0, 1.0], [1.0, 0.5, 0.5, 0.0], [1.5, 0.0]])
def test_bad_grids_are_rejected(bad):
    with pytest.raises(ValueError):
        time_grid(bad)


def test_no_grad_and_sample_argument_errors():
    model = point_model(shape=(2,))
    noise = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    assert not sample("euler", model, noise, nfe=2).requires_grad
    with pytest.raises(ValueError, match="not both"):
        sample("euler", model, noise, nfe=2, times=[1.0, 0.0])
