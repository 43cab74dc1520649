"""Video DiT: the DiT of dit.py on space-time patches, for clips (3, F, H, W) or their latents (4, F, h, w).

What changes from the image DiT (everything else, conditioning included, is dit.py's own pieces):
- tokens are tubelets: a Conv3d with kernel = stride = (tubelet_size, patch_size, patch_size), ViViT's
  "tubelet embedding" (Arnab et al., "ViViT", ICCV 2021), giving (F / pt) * (H / p) * (W / p) tokens;
- positions: a fixed 3-D sin-cos code (``embed.sincos_pos_embed_3d``: a quarter of the channels for the
  frame, the rest for the 2-D position) or a learned table initialised to it (``pos_embed="learned"``);
- ``attention="full"``: DiT blocks over all space-time tokens (ViViT's model 1);
  ``attention="factorised"``: each block attends within a frame, then across frames at each spatial
  position, then its MLP, every step with its own adaLN-Zero shift/scale/gate (ViViT's model 3,
  "factorised self-attention", in the same order; TimeSformer's divided attention, Bertasius et al. 2021,
  puts time first). Full attention costs O(N^2) in N = T*S tokens, factorised O(N (T + S)) and one more
  attention per block (+7 D (D + 1) parameters).
Conditioning is the image DiT's: c = emb_t(t) + emb_h(t - r) + emb_y(y), label ``num_classes`` the null
label, raw times in [0, 1]. Attention goes through F.scaled_dot_product_attention (dit.attention_layer),
so the objectives' JVP runs it on the math kernel; the network outputs exactly 0 at initialisation.

Registered as ``VideoDiT-{tiny,S,B,L,XL}/{1,2,4,8}`` (the image DiT's widths and depths; /p is the spatial
patch; the tubelet is 2 frames unless tubelet_size says otherwise). Token counts at tubelet 2, and
parameters with 700 classes (full / factorised attention):

    16 x 64 x 64 pixels (3 ch),  VideoDiT-S/4: 8 x 16 x 16 = 2,048 tokens   33.1M / 45.5M
                                 VideoDiT-B/4: same tokens                 131.0M / 180.6M
                                 VideoDiT-*/8: 8 x 8 x 8 = 512 tokens
    16 x  8 x  8 latents (4 ch), VideoDiT-S/2: 8 x  4 x  4 =   128 tokens   33.0M / 45.4M
    16 x 16 x 16 latents (4 ch), VideoDiT-B/2: 8 x  8 x  8 =   512 tokens  130.9M / 180.5M
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from flowzoo.backbones.dit import (
    DIT_SIZES, PATCH_SIZES, DiTBlock, FinalLayer, adaln_zero_init_, attention_layer, layer_norm, mlp_layer, modulate,
    run_blocks,
)
from flowzoo.backbones.embed import ConditionEmbedder, sincos_pos_embed_3d
from flowzoo.registry import BACKBONES

ATTENTION_MODES = ("full", "factorised")
POS_EMBEDS = ("sincos", "learned")


class TubeletEmbed(nn.Module):
    """(B, C, F, H, W) -> (B, N, D) tokens in (frame, row, col) order: one linear map per tubelet, as a Conv3d."""

    def __init__(self, in_channels: int, hidden_size: int, tubelet_size: int, patch_size: int):
        super().__init__()
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_channels, hidden_size, kernel_size=kernel, stride=kernel, bias=True)

    def forward(self, z: Tensor) -> Tensor:
        return self.proj(z).flatten(2).transpose(1, 2)


class FactorisedBlock(nn.Module):
    """adaLN-Zero block with divided attention: within each frame, then across frames, then the MLP.

    Tokens stay (B, T*S, D) in (frame, position) order; only the attentions see them regrouped, as
    (B*T, S, D) for space and (B*S, T, D) for time. c regresses shift/scale/gate x 3.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, frames: int):
        super().__init__()
        self.frames = frames
        self.norm1 = layer_norm(hidden_size)
        self.attn = attention_layer(hidden_size, num_heads)  # spatial
        self.norm_temporal = layer_norm(hidden_size)
        self.attn_temporal = attention_layer(hidden_size, num_heads)
        self.norm2 = layer_norm(hidden_size)
        self.mlp = mlp_layer(hidden_size, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 9 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        (shift_s, scale_s, gate_s, shift_t, scale_t, gate_t,
         shift_mlp, scale_mlp, gate_mlp) = self.adaLN_modulation(c).chunk(9, dim=-1)
        f = self.frames
        a = rearrange(modulate(self.norm1(x), shift_s, scale_s), "b (f s) d -> (b f) s d", f=f)
        x = x + gate_s[:, None] * rearrange(self.attn(a), "(b f) s d -> b (f s) d", f=f)
        a = rearrange(modulate(self.norm_temporal(x), shift_t, scale_t), "b (f s) d -> (b s) f d", f=f)
        x = x + gate_t[:, None] * rearrange(self.attn_temporal(a), "(b s) f d -> b (f s) d", b=x.shape[0])
        x = x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(s) for s in size)
    return h, w


class VideoDiT(nn.Module):
    """u(z, t, h, y) for clips or latent clips of shape (C, F, H, W); output has the shape of z.

    Args:
        input_size: frame side H = W, or (H, W); divisible by patch_size.
        num_frames: F; divisible by tubelet_size.
        patch_size, tubelet_size: tubelet extent in space (p x p) and time (pt frames).
        in_channels: C of z (3 for pixel clips, 4 for SD-VAE latents); also the output channels.
        hidden_size, depth, num_heads, mlp_ratio: transformer width, blocks, heads, MLP expansion.
        num_classes: labels 0..num_classes-1; label ``num_classes`` is null.
        attention: "full" (all space-time tokens) or "factorised" (space, then time, in every block).
        pos_embed: "sincos" (fixed 3-D, not a parameter) or "learned" (a parameter, initialised to sincos).
        gradient_checkpointing: recompute each block in backward (saves memory in training only).
    """

    def __init__(
        self,
        input_size: int | Sequence[int] = 16,
        num_frames: int = 16,
        patch_size: int = 2,
        tubelet_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        attention: str = "full",
        pos_embed: str = "sincos",
        frequency_embedding_size: int = 256,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        height, width = _pair(input_size)
        attention = "factorised" if attention == "factorized" else attention
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}.")
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed must be one of {', '.join(POS_EMBEDS)}, got {pos_embed!r}.")
        if height % patch_size or width % patch_size:
            raise ValueError(f"frame size {height}x{width} is not divisible by patch_size {patch_size}; pick a patch size that divides it.")
        if num_frames % tubelet_size:
            raise ValueError(f"num_frames {num_frames} is not divisible by tubelet_size {tubelet_size}; pick a tubelet that divides it.")
        self.num_classes = num_classes
        self.sample_shape = (in_channels, num_frames, height, width)
        self.patch_size, self.tubelet_size, self.attention = patch_size, tubelet_size, attention
        self.grid = (num_frames // tubelet_size, height // patch_size, width // patch_size)
        self.gradient_checkpointing = gradient_checkpointing

        self.x_embedder = TubeletEmbed(in_channels, hidden_size, tubelet_size, patch_size)
        self.cond_embedder = ConditionEmbedder(hidden_size, num_classes, frequency_embedding_size)
        pos = sincos_pos_embed_3d(hidden_size, self.grid)[None]
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(pos)
        else:  # a fixed function of the shape: a buffer that is not saved, as in the image DiT
            self.register_buffer("pos_embed", pos, persistent=False)
        if attention == "full":
            blocks = (DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        else:
            blocks = (FactorisedBlock(hidden_size, num_heads, mlp_ratio, self.grid[0]) for _ in range(depth))
        self.blocks = nn.ModuleList(blocks)
        self.final_layer = FinalLayer(hidden_size, patch_size, tubelet_size * in_channels)
        self.initialize_weights()

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    def initialize_weights(self) -> None:
        adaln_zero_init_(self)
        if not self.pos_embed.is_meta:  # recompute after to_empty() from a meta-device build
            with torch.no_grad():
                self.pos_embed.copy_(sincos_pos_embed_3d(self.pos_embed.shape[-1], self.grid)[None])

    def unpatchify(self, x: Tensor) -> Tensor:
        """(B, N, pt*p*p*C) -> (B, C, F, H, W)."""
        gt, gh, gw = self.grid
        p, pt = self.patch_size, self.tubelet_size
        return rearrange(x, "b (gt gh gw) (pt ph pw c) -> b c (gt pt) (gh ph) (gw pw)", gt=gt, gh=gh, gw=gw, pt=pt, ph=p, pw=p)

    def forward(self, z: Tensor, t: Tensor | float, h: Tensor | float, y: Tensor | None = None) -> Tensor:
        x = self.x_embedder(z) + self.pos_embed.to(z.dtype)
        c = self.cond_embedder(t, h, y, like=z)
        x = run_blocks(self.blocks, x, c, checkpointing=self.gradient_checkpointing and self.training)
        return self.unpatchify(self.final_layer(x, c))


for _size, (_depth, _hidden, _heads) in DIT_SIZES.items():
    for _patch in PATCH_SIZES:
        BACKBONES.add(
            f"VideoDiT-{_size}/{_patch}",
            functools.partial(VideoDiT, depth=_depth, hidden_size=_hidden, num_heads=_heads, patch_size=_patch),
        )
