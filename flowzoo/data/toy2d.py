"""2-D toy distributions: checkerboard, 8 gaussians, moons, spirals.

Scale: every toy is multiplied by one isotropic constant (shapes are not distorted) chosen so that the
average per-coordinate variance is exactly 1, i.e. trace(Cov(x)) / 2 = 1, derived in closed form below.
Checkerboard and 8 gaussians are also centred with unit variance per coordinate; moons is centred,
with per-axis variances of about 1.5 and 0.5.

Unconditional: num_classes = 0 and labels are zeros (label num_classes = 0 is the null label).
Toys with a known support expose `in_support(x) -> BoolTensor` (and 8 gaussians `mode_centers`,
`mode_std`); the evaluation metrics use them.
"""

from __future__ import annotations

import math

import torch

from flowzoo.data.stream import REFERENCE, SampledStream, generator
from flowzoo.registry import DATASETS


class Toy2D:
    """Base: subclasses implement `sample(n, gen) -> (n, 2) float32`."""

    name = "toy"
    sample_shape = (2,)
    num_classes = 0
    in_support = None  # a method on toys that know their support

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def stream(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> SampledStream:
        return SampledStream(self.sample, batch_size, seed, rank, world_size)

    def reference(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """n fresh samples for evaluation, from a seed family disjoint from the training streams."""
        return self.sample(n, generator(REFERENCE, seed)), torch.zeros(n, dtype=torch.long)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@DATASETS.register("toy:checkerboard")
class Checkerboard(Toy2D):
    """Uniform on the 8 cells (i + j even) of a 4x4 board over [-a, a]^2, a = sqrt(3).

    Each coordinate's marginal is uniform on [-a, a] (every row and column holds two filled cells), so
    Var = a^2 / 3 = 1 with a = sqrt(3); the cell side is 2a / 4 = sqrt(3)/2 ~= 0.866.
    """

    name = "toy:checkerboard"
    half_width = math.sqrt(3.0)
    cells = 4

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        col = torch.randint(0, self.cells, (n,), generator=gen)
        # Row index among the two filled cells of this column: parity fixed by the column.
        row = 2 * torch.randint(0, self.cells // 2, (n,), generator=gen) + col % 2
        cell = torch.stack([col, row], dim=1).float()
        u = torch.rand(n, 2, generator=gen)
        side = 2 * self.half_width / self.cells
        return (cell + u) * side - self.half_width

    def in_support(self, x: torch.Tensor) -> torch.Tensor:
        side = 2 * self.half_width / self.cells
        ij = torch.floor((x + self.half_width) / side)
        inside = ((ij >= 0) & (ij < self.cells)).all(dim=1)
        return inside & (ij.sum(dim=1) % 2 == 0)  # filled cells have col + row even, as in sample()


@DATASETS.register("toy:8gaussians")
class EightGaussians(Toy2D):
    """Mixture of 8 equal isotropic Gaussians with centres on a circle of radius R, std sigma = R / 10.

    Per-coordinate variance R^2 / 2 + sigma^2 = 1 gives R = 1 / sqrt(0.51) ~= 1.400, sigma ~= 0.140.
    Neighbouring centres are 2 R sin(pi/8) ~= 0.77 R apart, so 3-sigma discs (radius 0.3 R) are disjoint.
    Support: within 3 sigma of a centre; a sample from the mixture lands there with probability
    1 - exp(-9/2) ~= 0.989 (the chi distribution with 2 degrees of freedom).
    """

    name = "toy:8gaussians"
    radius = 1.0 / math.sqrt(0.51)
    mode_std = radius / 10
    support_stds = 3.0

    @property
    def mode_centers(self) -> torch.Tensor:
        angle = torch.arange(8) * (2 * math.pi / 8)
        return self.radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        mode = torch.randint(0, 8, (n,), generator=gen)
        return self.mode_centers[mode] + self.mode_std * torch.randn(n, 2, generator=gen)

    def nearest_mode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(index of the nearest centre, distance to it) for each row of x."""
        dist = torch.cdist(x.float(), self.mode_centers)
        return dist.min(dim=1).indices, dist.min(dim=1).values

    def in_support(self, x: torch.Tensor) -> torch.Tensor:
        return self.nearest_mode(x)[1] < self.support_stds * self.mode_std


@DATASETS.register("toy:moons")
class Moons(Toy2D):
    """Two interleaving half circles (as scikit-learn's make_moons) with Gaussian noise, noise = 0.1.

    Upper moon (cos th, sin th), lower moon (1 - cos th, 1/2 - sin th), th ~ U[0, pi]. Closed-form
    moments: mean (1/2, 1/4); Var x = 3/4, Var y = 9/16 - 1/pi; both plus noise^2 before scaling.
    """

    name = "toy:moons"
    noise = 0.1
    mean = (0.5, 0.25)
    scale = 1.0 / math.sqrt((0.75 + 9 / 16 - 1 / math.pi) / 2 + 0.1 ** 2)

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        th = math.pi * torch.rand(n, generator=gen)
        lower = torch.rand(n, generator=gen) < 0.5
        x = torch.where(lower, 1 - torch.cos(th), torch.cos(th))
        y = torch.where(lower, 0.5 - torch.sin(th), torch.sin(th))
        pts = torch.stack([x, y], dim=1) + self.noise * torch.randn(n, 2, generator=gen)
        return (pts - torch.tensor(self.mean)) * self.scale


@DATASETS.register("toy:spirals")
class Spirals(Toy2D):
    """Two interleaved Archimedean spiral arms, 1.5 turns each, with Gaussian noise (0.3 before scaling).

    Arm k in {0, 1}: th = 3 pi sqrt(u), u ~ U[0, 1] (roughly uniform density along the arm), point
    th (cos(th + k pi), sin(th + k pi)). The arms are point-symmetric so the mean is 0, and
    E|x|^2 = E[th^2] = (3 pi)^2 / 2, giving per-coordinate variance (3 pi)^2 / 4 + noise^2.
    """

    name = "toy:spirals"
    noise = 0.3
    turns_angle = 3 * math.pi
    scale = 1.0 / math.sqrt((3 * math.pi) ** 2 / 4 + 0.3 ** 2)

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        th = self.turns_angle * torch.sqrt(torch.rand(n, generator=gen))
        arm = torch.randint(0, 2, (n,), generator=gen).float()
        phase = th + math.pi * arm
        pts = th[:, None] * torch.stack([torch.cos(phase), torch.sin(phase)], dim=1)
        return (pts + self.noise * torch.randn(n, 2, generator=gen)) * self.scale
