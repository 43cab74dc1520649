"""Residual MLP backbone for 2-D toys and small flattened images.

z of any ``sample_shape`` is flattened to D numbers, mapped to ``width``, passed through ``depth``
pre-norm residual blocks x <- x + W2 SiLU(W1 adaLN(x, c)) with c = emb_t(t) + emb_h(h) + emb_y(y),
and mapped back to D numbers by a zero-initialised output layer (so u = 0 at init, as in DiT's adaLN-Zero).
"""

from __future__ import annotations

import functools
import math

from torch import Tensor, nn

from flowzoo.backbones.embed import ConditionEmbedder
from flowzoo.registry import BACKBONES


class ResidualBlock(nn.Module):
    """LayerNorm -> adaLN scale/shift from c -> Linear -> SiLU -> Linear, added to the stream."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.ff = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        # Zero modulation: every block starts as a plain unconditioned residual MLP block.
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=-1)
        return x + self.ff(self.norm(x) * (1 + scale) + shift)


class ResidualMLP(nn.Module):
    """u(z, t, h, y) for samples of any small shape, e.g. (2,) points or (1, 8, 8) digits.

    Args:
        sample_shape: shape of one sample; if omitted, (in_channels, input_size, input_size) when
            input_size is given, else (2,) for the 2-D toys.
        num_classes: labels 0..num_classes-1; label ``num_classes`` is null (0: unconditional).
        width, depth: hidden width and number of residual blocks.
    """

    def __init__(
        self,
        sample_shape: tuple[int, ...] | None = None,
        num_classes: int = 0,
        width: int = 256,
        depth: int = 4,
        input_size: int | None = None,
        in_channels: int = 1,
        frequency_embedding_size: int = 256,
    ):
        super().__init__()
        if sample_shape is None:
            sample_shape = (in_channels, input_size, input_size) if input_size else (2,)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.num_classes = num_classes
        dim = math.prod(self.sample_shape)
        self.input = nn.Linear(dim, width)
        self.cond_embedder = ConditionEmbedder(width, num_classes, frequency_embedding_size)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.output = nn.Linear(width, dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, z: Tensor, t: Tensor | float, h: Tensor | float, y: Tensor | None = None) -> Tensor:
        c = self.cond_embedder(t, h, y, like=z)
        x = self.input(z.flatten(1))
        for block in self.blocks:
            x = block(x, c)
        return self.output(nn.functional.silu(self.out_norm(x))).reshape(z.shape)


BACKBONES.add("mlp", functools.partial(ResidualMLP, width=256, depth=4))
BACKBONES.add("mlp-large", functools.partial(ResidualMLP, width=512, depth=6))
