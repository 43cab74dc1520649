"""Pictures for a run directory: a PNG grid of images, strips and a GIF of video clips, a 2-D scatter of
generated vs data samples.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global backend switch) and
PIL for the digit grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def image_grid(images: torch.Tensor, nrow: int = 10, scale: int = 4, pad: int = 1):
    """(N, C, H, W) images in [-1, 1] (C = 1 or 3) as one PIL image, `nrow` per row, each pixel `scale`x."""
    from PIL import Image

    x = torch.as_tensor(images).detach().float().cpu().clamp(-1, 1)
    n, c, h, w = x.shape
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    grid = torch.zeros(c, nrows * (h + pad) + pad, ncol * (w + pad) + pad)  # grey separators
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = x[i]
    # Digits are dark strokes on -1 background; show them dark-on-light by inverting for C = 1.
    pixels = ((grid + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    if c == 1:
        pixels = 255 - pixels[..., 0]
    img = Image.fromarray(np.ascontiguousarray(pixels))
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def _output(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int = 10, scale: int = 4, pad: int = 1) -> Path:
    """Write (N, C, H, W) images in [-1, 1] (C = 1 or 3) as a PNG grid, `nrow` per row, each pixel `scale`x."""
    path = _output(path)
    image_grid(images, nrow, scale, pad).save(path)
    return path


def save_video_strips(clips: torch.Tensor, path: str | Path, max_frames: int = 16, scale: int | None = None) -> Path:
    """Write (N, C, F, H, W) clips in [-1, 1] as a PNG: one clip per row, its frames left to right.

    Clips longer than ``max_frames`` show every k-th frame. ``scale`` defaults to enlarging small
    frames to about 64 px.
    """
    x = torch.as_tensor(clips).detach()
    n, c, f, h, w = x.shape
    x = x[:, :, ::max(1, -(-f // max_frames))]
    frames = x.shape[2]
    tiles = x.transpose(1, 2).reshape(n * frames, c, h, w)
    return save_image_grid(tiles, path, nrow=frames, scale=scale or max(1, 64 // max(h, w)))


def save_video_gif(clips: torch.Tensor, path: str | Path, nrow: int = 4, fps: float = 8.0, scale: int | None = None) -> Path:
    """Write (N, C, F, H, W) clips in [-1, 1] as an animated GIF: a grid of clips, `nrow` per row, playing in step."""
    x = torch.as_tensor(clips).detach()
    h, w = x.shape[-2:]
    scale = scale or max(1, 64 // max(h, w))
    frames = [image_grid(x[:, :, k], nrow, scale).convert("RGB") for k in range(x.shape[2])]
    path = _output(path)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
    return path


def save_toy_scatter(generated: torch.Tensor, data: torch.Tensor | None, path: str | Path,
                     title: str | None = None, lim: float = 3.0) -> Path:
    """Write a side-by-side scatter (data | generated) of (N, 2) samples to a PNG at `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [("data", data), ("generated", generated)] if data is not None else [("generated", generated)]
    fig = Figure(figsize=(3.2 * len(panels), 3.4), dpi=100)
    FigureCanvasAgg(fig)
    for k, (label, pts) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        pts = torch.as_tensor(pts).detach().float().cpu().numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.5, linewidths=0, color="C0" if k == 0 and data is not None else "C1")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=label, xticks=[], yticks=[])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
