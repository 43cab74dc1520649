"""The exact flow of Gaussian data, in closed form: the fixed point every objective should have.

For x ~ N(mu, diag(sigma^2)) and e ~ N(0, I), z_t = (1 - t) x + t e is Gaussian with mean m_t = (1 - t) mu and
per-dimension std s_t = sqrt((1 - t)^2 sigma^2 + t^2). The probability-flow ODE maps the marginals onto
each other by the monotone affine map psi_{t->r}(z) = m_r + (s_r / s_t) (z - m_t), so

    u(z, r, t) = (z - psi_{t->r}(z)) / (t - r)             the exact average velocity (r < t)
    v(z, t)    = -mu + (s'_t / s_t) (z - m_t)               its r -> t limit, s'_t = (t - (1 - t) sigma^2) / s_t

No network and no training is involved: these are derived from the data distribution alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GaussianData:
    def __init__(self, mu, sigma, dtype=torch.float64):
        self.mu = torch.as_tensor(mu, dtype=dtype)
        self.sigma = torch.as_tensor(sigma, dtype=dtype)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.mu + self.sigma * torch.randn(n, self.mu.numel(), generator=generator, dtype=self.mu.dtype)

    def _m_s(self, t: Tensor):
        t = t[:, None]
        return (1 - t) * self.mu, torch.sqrt((1 - t) ** 2 * self.sigma**2 + t**2)

    def average_velocity(self, z: Tensor, r: Tensor, t: Tensor) -> Tensor:
        m_t, s_t = self._m_s(t)
        m_r, s_r = self._m_s(r)
        h = (t - r)[:, None]
        flows = h > 1e-9
        safe_h = torch.where(flows, h, torch.ones_like(h))
        average = (z - (m_r + s_r / s_t * (z - m_t))) / safe_h
        return torch.where(flows, average, self.instantaneous_velocity(z, t))

    def instantaneous_velocity(self, z: Tensor, t: Tensor) -> Tensor:
        m_t, s_t = self._m_s(t)
        ds = (t[:, None] - (1 - t[:, None]) * self.sigma**2) / s_t
        return -self.mu + ds / s_t * (z - m_t)


class ExactFlowNet(nn.Module):
    """net(z, t, h, y) = the exact u (or v, for objectives whose fixed point is the instantaneous velocity)
    plus a learnable affine perturbation a + b * z, zero at initialisation: its gradient at zero is the
    objective's expected gradient at the exact solution."""

    def __init__(self, data: GaussianData, fixed_point: str = "average"):
        super().__init__()
        self.data, self.fixed_point = data, fixed_point
        dim = data.mu.numel()
        self.num_classes = 0
        self.sample_shape = (dim,)
        self.a = nn.Parameter(torch.zeros(dim, dtype=data.mu.dtype))
        self.b = nn.Parameter(torch.zeros(dim, dtype=data.mu.dtype))

    def exact(self, z, t, h):
        t = torch.as_tensor(t, dtype=z.dtype).expand(z.shape[0]) if torch.as_tensor(t).dim() == 0 else t
        h = torch.as_tensor(h, dtype=z.dtype).expand(z.shape[0]) if torch.as_tensor(h).dim() == 0 else h
        if self.fixed_point == "instantaneous":
            return self.data.instantaneous_velocity(z, t)
        return self.data.average_velocity(z, t - h, t)

    def forward(self, z, t, h, y=None):
        return self.exact(z, t, h) + self.a + self.b * z
