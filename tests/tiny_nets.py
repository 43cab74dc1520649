"""Small randomly initialised networks that follow the backbone contract net(z, t, h, y), for tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyVelocityNet(nn.Module):
    """A smooth, nonlinear u(z, r, t) on flat vectors, conditioned on a class label."""

    def __init__(self, dim: int = 4, num_classes: int = 3, width: int = 32):
        super().__init__()
        self.num_classes = num_classes
        self.sample_shape = (dim,)
        self.inp = nn.Linear(dim + 2, width)
        self.label = nn.Embedding(num_classes + 1, width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, dim)

    def forward(self, z, t, h, y=None):
        if y is None:
            y = torch.full((z.shape[0],), self.num_classes, dtype=torch.long, device=z.device)
        a = torch.tanh(self.inp(torch.cat([z, t[:, None], h[:, None]], dim=1)) + self.label(y))
        return self.out(torch.tanh(self.hidden(a)) * (1 + t[:, None]))


class TinyAttentionNet(nn.Module):
    """Tokens with self-attention through F.scaled_dot_product_attention (fused kernels by default)."""

    def __init__(self, tokens: int = 4, dim: int = 8, num_classes: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.sample_shape = (tokens, dim)
        self.time = nn.Linear(2, dim)
        self.label = nn.Embedding(num_classes + 1, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, z, t, h, y=None):
        if y is None:
            y = torch.full((z.shape[0],), self.num_classes, dtype=torch.long, device=z.device)
        x = z + (self.time(torch.stack([t, h], 1)) + self.label(y))[:, None, :]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return self.out(torch.tanh(a + x))
