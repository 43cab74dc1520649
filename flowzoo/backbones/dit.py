"""Diffusion Transformer (DiT; Peebles & Xie, "Scalable Diffusion Models with Transformers", ICCV 2023).

Differences from the published DiT, all required by flowzoo's conventions (DESIGN.md §1):
- two timestep embedders, for t and for h = t - r, summed with the class embedding;
- times are raw in [0, 1] (see ``embed.MIN_FREQ`` / ``MAX_FREQ`` for the frequency choice);
- no learned sigma: the output has as many channels as the input (an average velocity);
- no label dropout inside the network (the objective drops labels for CFG).
Everything else follows the paper: timm PatchEmbed, fixed 2-D sin-cos positions, adaLN-Zero blocks,
a zero-initialised adaLN final layer, so the network outputs exactly 0 at initialisation.
"""

from __future__ import annotations

import functools

import torch
from einops import rearrange
from timm.layers import Attention, Mlp, PatchEmbed
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from flowzoo.backbones.attention import attention
from flowzoo.backbones.embed import ConditionEmbedder, sincos_pos_embed_2d
from flowzoo.registry import BACKBONES


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTAttention(Attention):
    """timm multi-head self-attention whose softmax(q k^T / sqrt(d)) v is flowzoo's ``attention``.

    Same parameters (and names) as timm's Attention, so every checkpoint loads as before, and the same
    outputs bit for bit outside a JVP scope, where ``attention`` is F.scaled_dot_product_attention with
    PyTorch's fused kernels (whatever TIMM_FUSED_ATTN says). Inside a JVP backend's scope it runs the
    kernel the objective selected (``objective.jvp: {name: forward, attention: math | jvp_flash}``):
    the fused kernels have no forward-mode rule. No mask, no attention dropout (DiT uses neither).
    """

    def forward(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = attention(q, k, v).transpose(1, 2).reshape(B, N, -1)
        norm = getattr(self, "norm", None)  # timm's scale_norm (Identity here; absent in older timm)
        if norm is not None:
            x = norm(x)
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))


def attention_layer(hidden_size: int, num_heads: int) -> DiTAttention:
    """DiT's self-attention: timm's Attention with qkv bias, its core through flowzoo's dispatcher."""
    attn = DiTAttention(hidden_size, num_heads=num_heads, qkv_bias=True)
    attn.fused_attn = True  # DiTAttention always takes the SDPA path; the flag says so to code that reads it
    return attn


def mlp_layer(hidden_size: int, mlp_ratio: float) -> Mlp:
    return Mlp(hidden_size, int(hidden_size * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"))


def layer_norm(hidden_size: int) -> nn.LayerNorm:
    """The affine-free LayerNorm that adaLN modulates."""
    return nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning (DiT §3.2): c regresses shift/scale/gate x 2."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = layer_norm(hidden_size)
        self.attn = attention_layer(hidden_size, num_heads)
        self.norm2 = layer_norm(hidden_size)
        self.mlp = mlp_layer(hidden_size, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa[:, None] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """adaLN (shift, scale) then a linear map from tokens to p*p*C patch values."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = layer_norm(hidden_size)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def adaln_zero_init_(net: nn.Module) -> None:
    """DiT's init: xavier linears, N(0, 0.02) embeddings, zeroed adaLN and output layers (adaLN-Zero).

    For any DiT-shaped ``net``: ``x_embedder.proj`` (a conv patch embedding), ``cond_embedder``, ``blocks``
    (each with ``adaLN_modulation``) and ``final_layer``. The network then outputs exactly 0.
    """
    for module in net.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    proj = net.x_embedder.proj.weight  # a conv; init as the linear map it is
    nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))
    nn.init.zeros_(net.x_embedder.proj.bias)
    net.cond_embedder.reset_parameters()
    for block in net.blocks:
        nn.init.zeros_(block.adaLN_modulation[-1].weight)
        nn.init.zeros_(block.adaLN_modulation[-1].bias)
    for layer in (net.final_layer.adaLN_modulation[-1], net.final_layer.linear):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)


def run_blocks(blocks: nn.ModuleList, x: Tensor, c: Tensor, checkpointing: bool = False) -> Tensor:
    """x through each block(x, c); with ``checkpointing``, recompute each block in backward (training only)."""
    for block in blocks:
        if checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, c, use_reentrant=False)
        else:
            x = block(x, c)
    return x


class DiT(nn.Module):
    """u(z, t, h, y) for images / latents of shape (C, H, W); output has the shape of z.

    Args:
        input_size: spatial side H = W of z (32 for SD-VAE latents of 256 px images).
        patch_size: side of a square patch; input_size must be divisible by it.
        in_channels: C of z; also the output channels (no learned sigma).
        hidden_size, depth, num_heads, mlp_ratio: transformer width, blocks, heads, MLP expansion.
        num_classes: class-conditional labels 0..num_classes-1; label ``num_classes`` is null.
        gradient_checkpointing: recompute each block in backward (saves memory in training only).
    """

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        frequency_embedding_size: int = 256,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not divisible by patch_size {patch_size}; pick a patch size that divides it.")
        self.num_classes = num_classes
        self.sample_shape = (in_channels, input_size, input_size)
        self.patch_size = patch_size
        self.gradient_checkpointing = gradient_checkpointing

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size, bias=True)
        self.cond_embedder = ConditionEmbedder(hidden_size, num_classes, frequency_embedding_size)
        grid = input_size // patch_size
        # A fixed function of the shape, so a buffer that is not saved: checkpoints stay size-agnostic.
        self.register_buffer("pos_embed", sincos_pos_embed_2d(hidden_size, grid)[None], persistent=False)
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size, in_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        adaln_zero_init_(self)
        if not self.pos_embed.is_meta:  # recompute after to_empty() from a meta-device build
            self.pos_embed.copy_(sincos_pos_embed_2d(self.pos_embed.shape[-1], self.sample_shape[1] // self.patch_size)[None])

    def unpatchify(self, x: Tensor) -> Tensor:
        """(B, N, p*p*C) -> (B, C, H, W)."""
        p, side = self.patch_size, self.sample_shape[1] // self.patch_size
        return rearrange(x, "b (gh gw) (ph pw c) -> b c (gh ph) (gw pw)", gh=side, gw=side, ph=p, pw=p)

    def forward(self, z: Tensor, t: Tensor | float, h: Tensor | float, y: Tensor | None = None) -> Tensor:
        x = self.x_embedder(z) + self.pos_embed.to(z.dtype)
        c = self.cond_embedder(t, h, y, like=z)
        x = run_blocks(self.blocks, x, c, checkpointing=self.gradient_checkpointing and self.training)
        return self.unpatchify(self.final_layer(x, c))


# Sizes of the DiT paper (Table 1) plus a CPU-sized ``tiny``: name -> (depth, hidden_size, num_heads).
DIT_SIZES = {
    "tiny": (4, 128, 4),
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
PATCH_SIZES = (1, 2, 4, 8)

for _size, (_depth, _hidden, _heads) in DIT_SIZES.items():
    for _patch in PATCH_SIZES:
        BACKBONES.add(
            f"DiT-{_size}/{_patch}",
            functools.partial(DiT, depth=_depth, hidden_size=_hidden, num_heads=_heads, patch_size=_patch),
        )
