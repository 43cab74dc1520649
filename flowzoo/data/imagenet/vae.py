"""The SD-VAE (stabilityai/sd-vae-ft-ema) through diffusers' AutoencoderKL: images <-> 4x32x32 latents.

diffusers is the optional extra ``vae`` (pip install 'flowzoo[vae]'). The weights are the user's: a local
folder (what ``AutoencoderKL.save_pretrained`` writes) or a hub id, which downloads only where there is
a network. Tests pass an AutoencoderKL object built in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

SD_SCALE = 0.18215  # Stable Diffusion's latent scaling factor (LDM, Rombach et al. 2022); DiT uses it too


def load_vae(source: Any, device: str | torch.device = "cpu"):
    """An AutoencoderKL from a local folder, a hub id, or an AutoencoderKL instance (kept as is), in eval mode."""
    if not isinstance(source, (str, Path)):
        return source.to(device).eval().requires_grad_(False)
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise ValueError("the SD-VAE needs diffusers: pip install 'flowzoo[vae]' (or pip install diffusers).") from None
    source = str(source)
    local = Path(source).expanduser()
    looks_local = local.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1
    if looks_local and not (local / "config.json").is_file():
        raise ValueError(
            f"no VAE at {source}: pass a folder with config.json and weights (AutoencoderKL.save_pretrained) "
            f"or a hub id such as stabilityai/sd-vae-ft-ema where there is a network."
        )
    try:
        vae = AutoencoderKL.from_pretrained(str(local) if looks_local else source)
    except OSError as exc:
        raise ValueError(f"could not load the VAE {source!r} ({str(exc).splitlines()[0]}); give a local folder or check the network.") from None
    return vae.to(device).eval().requires_grad_(False)


def describe_vae(source: Any) -> str:
    """How the manifest names the VAE: its path or hub id, or 'in-memory <class>' for an object."""
    return str(source) if isinstance(source, (str, Path)) else f"in-memory {type(source).__name__}"


@torch.no_grad()
def encode(vae, images_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(posterior mean, posterior std) in float32 for (B, H, W, 3) uint8 images; pixels mapped to [-1, 1]."""
    param = next(vae.parameters())
    x = images_uint8.permute(0, 3, 1, 2).to(param.device, param.dtype) / 127.5 - 1.0
    dist = vae.encode(x).latent_dist
    return dist.mean.float().cpu(), dist.std.float().cpu()


@torch.no_grad()
def decode(vae, latents: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(B, 3, H, W) uint8 images from *unnormalised* latents (the VAE's own scale)."""
    param = next(vae.parameters())
    out = []
    for chunk in latents.split(batch_size):
        x = vae.decode(chunk.to(param.device, param.dtype)).sample.float()
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
    return torch.cat(out)
