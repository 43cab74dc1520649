"""Conditioning embeddings shared by every backbone: times t and h = t - r, and class labels.

The condition vector is c = emb_t(t) + emb_h(h) + emb_y(y) (DESIGN.md §1; MeanFlow, Geng et al.
2025, feeds (t, t - r) the same way). Times arrive RAW in [0, 1]; there is no x1000 factor on the
input, so a JVP tangent of 1 on t stays 1 (DESIGN.md §1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# Frequency ladder of the sinusoidal time features, in radians per unit of t.
# DiT (Peebles & Xie 2023) uses omega_k = max_period^(-k/half) with max_period = 10^4 on t in [0, 1000];
# on raw t in [0, 1] most of those channels would be nearly constant. We instead space the
# frequencies geometrically over [MIN_FREQ, MAX_FREQ]:
#   MIN_FREQ = 1  -> period 2*pi > 1: cos/sin change monotonically over [0, 1], a smooth "where am I" code;
#   MAX_FREQ = 16 -> period ~0.4: fine enough for an MLP on top to resolve times 0.01 apart.
# The ceiling matters for MeanFlow: d(embedding)/dt, which the JVP multiplies into the target, grows
# with it. Measured on digits (MeanFlow, residual MLP, 4k steps, 1-NFE classifier FD; floor 3.8):
# MAX_FREQ = 200 -> 138, 30 -> 33, 10 -> 7.1, 4 -> 8.8; target MSE 7.2 at 200 against 0.3 at 10.
MIN_FREQ = 1.0
MAX_FREQ = 16.0


def sinusoidal_embedding(t: Tensor, dim: int, min_freq: float = MIN_FREQ, max_freq: float = MAX_FREQ) -> Tensor:
    """[cos(omega_k t), sin(omega_k t)] with omega_k geometric in [min_freq, max_freq]; shape (B, dim)."""
    half = dim // 2
    ladder = torch.linspace(0.0, 1.0, half, device=t.device, dtype=t.dtype)
    freqs = torch.exp(math.log(min_freq) + ladder * (math.log(max_freq) - math.log(min_freq)))
    phase = t[:, None] * freqs[None]
    emb = torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)
    if dim % 2:  # odd width: pad one constant channel
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def batch_times(t: Tensor | float, batch: int, like: Tensor) -> Tensor:
    """A (B,) float tensor from a scalar, a (B,) vector or any shape with B elements (e.g. (B, 1, 1, 1))."""
    t = torch.as_tensor(t, device=like.device)
    if not t.is_floating_point():
        t = t.to(like.dtype)
    # Keep float64 (for finite-difference checks) but never compute the sinusoids in half precision.
    t = t.to(torch.promote_types(t.dtype, torch.float32))
    if t.numel() == 1:
        return t.reshape(1).expand(batch)
    if t.numel() != batch:
        raise ValueError(f"got {t.numel()} times for a batch of {batch}; pass one time per sample or a scalar.")
    return t.reshape(batch)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of a scalar time followed by a 2-layer SiLU MLP (DiT's TimestepEmbedder)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: Tensor) -> Tensor:
        emb = sinusoidal_embedding(t, self.frequency_embedding_size)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Table of num_classes + 1 rows; row ``num_classes`` is the null (unconditional) label.

    Label dropout for classifier-free guidance belongs to the objective, not here, so the backbone
    is a pure function of its inputs (which the JVP and the tests rely on).
    """

    def __init__(self, num_classes: int, hidden_size: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, y: Tensor | None, batch: int, device: torch.device) -> Tensor:
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        return self.embedding_table(y.reshape(batch).long())


class ConditionEmbedder(nn.Module):
    """c = emb_t(t) + emb_h(h) + emb_y(y): two separate time embedders and one class table."""

    def __init__(self, hidden_size: int, num_classes: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.t_embedder = TimestepEmbedder(hidden_size, frequency_embedding_size)
        self.h_embedder = TimestepEmbedder(hidden_size, frequency_embedding_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size)

    def forward(self, t: Tensor | float, h: Tensor | float, y: Tensor | None, like: Tensor) -> Tensor:
        batch = like.shape[0]
        t = batch_times(t, batch, like)
        h = batch_times(h, batch, like)
        return self.t_embedder(t) + self.h_embedder(h) + self.y_embedder(y, batch, like.device)

    def reset_parameters(self) -> None:
        """DiT's init: N(0, 0.02) for the time MLPs and the class table."""
        for embedder in (self.t_embedder, self.h_embedder):
            for layer in (embedder.mlp[0], embedder.mlp[2]):
                nn.init.normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)


def sincos_1d(pos: Tensor, dim: int) -> Tensor:
    """[sin(pos * omega_k), cos(pos * omega_k)] with omega_k = 10000^(-k / (dim / 2)) (Transformer / MAE); (len(pos), dim)."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / half)
    phase = pos.reshape(-1, 1) * omega[None]
    return torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)


def sincos_pos_embed_2d(embed_dim: int, grid_size: int | tuple[int, int]) -> Tensor:
    """Fixed 2-D sin-cos positional embedding (MAE / DiT): half the channels encode the row, half the column.

    Returns (rows * cols, embed_dim), tokens in row-major order, matching timm's PatchEmbed flattening.
    ``grid_size`` is a side (square grid) or (rows, cols).
    """
    if embed_dim % 4:
        raise ValueError(f"hidden size {embed_dim} must be divisible by 4 for the 2-D sin-cos embedding.")
    gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    rows, cols = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64), indexing="ij")
    # MAE/DiT put the column (w) code first, then the row (h) code.
    return torch.cat([sincos_1d(cols, embed_dim // 2), sincos_1d(rows, embed_dim // 2)], dim=1).float()


def sincos_pos_embed_3d(embed_dim: int, grid: tuple[int, int, int]) -> Tensor:
    """Fixed space-time sin-cos embedding for a (frames, rows, cols) token grid; (frames * rows * cols, embed_dim).

    Channels are split, not summed (so a shift in time never looks like a shift in space): the first
    quarter encodes the frame index with a 1-D code, the other three quarters the 2-D position of
    ``sincos_pos_embed_2d``; tokens in (frame, row, col) order. embed_dim must be divisible by 16.
    """
    if embed_dim % 16:
        raise ValueError(f"hidden size {embed_dim} must be divisible by 16 for the 3-D sin-cos embedding.")
    gt, gh, gw = grid
    time_dim = embed_dim // 4
    frames = sincos_1d(torch.arange(gt, dtype=torch.float64), time_dim).float()
    space = sincos_pos_embed_2d(embed_dim - time_dim, (gh, gw))
    return torch.cat([frames[:, None].expand(gt, gh * gw, time_dim), space[None].expand(gt, gh * gw, -1)], dim=2).reshape(gt * gh * gw, embed_dim)
