"""Pictures for a run directory: a PNG grid of images, strips and a GIF of video clips, a 2-D scatter of
generated vs data samples.

Every figure a run writes carries a title saying what made it (objective, sampler, NFE, training step,
seed; see `figure_title`), and image grids of conditional samples name each column's class, so a PNG
found on its own still says what it shows.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global backend switch) and
PIL for the digit grid. Every file is written atomically (flowzoo.atomic): a kill or a full disk leaves
the previous figure, never a torn one.
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


def figure_title(objective: str | None, sampler: str, nfe: int, step: int | None, seed: int,
                 guidance: float = 1.0) -> str:
    """One line naming what made a figure, e.g. "alphaflow | sampler meanflow | 1 NFE | step 300 | seed 0"."""
    parts = ([objective] if objective else []) + [f"sampler {sampler}", f"{nfe} NFE"]
    parts += ([f"step {step}"] if step is not None else []) + [f"seed {seed}"]
    if guidance != 1.0:
        parts.append(f"CFG {guidance:g}")
    return " | ".join(parts)


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def captioned(img, title: str | None = None, labels: list[str] | None = None, ncol: int = 1,
              tile: tuple[int, int] = (0, 0)):
    """`img` (a grid of `ncol` columns of `tile` = (width, height) px cells) under a title band.

    `labels` (one per cell, row-major) become column headers when every column holds one label (as
    class-balanced samples 0, 1, ..., 9, 0, ... do in a 10-wide grid), else a tag in each cell's corner.
    """
    from PIL import Image, ImageDraw

    if not title and not labels:
        return img
    font = _font(12)
    per_column = None
    if labels:
        columns = [set(labels[q::ncol]) for q in range(min(ncol, len(labels)))]
        per_column = [next(iter(c)) for c in columns] if all(len(c) == 1 for c in columns) else None
    title_h = 18 if title else 0
    header_h = 16 if per_column else 0
    title_w = int(ImageDraw.Draw(img).textlength(title, font=font)) + 8 if title else 0
    out = Image.new(img.mode, (max(img.width, title_w), img.height + title_h + header_h), "white" if img.mode == "RGB" else 255)
    out.paste(img, (0, title_h + header_h))
    draw = ImageDraw.Draw(out)
    ink = "black" if img.mode == "RGB" else 0
    if title:
        draw.text((4, 2), title, fill=ink, font=font)
    if per_column:
        for q, name in enumerate(per_column):
            draw.text((q * tile[0] + tile[0] // 2, title_h + header_h // 2), name, fill=ink, font=font, anchor="mm")
    elif labels:
        for i, name in enumerate(labels):
            r, q = divmod(i, ncol)
            x, y = q * tile[0] + 2, title_h + r * tile[1] + 2
            box = draw.textbbox((x, y), name, font=_font(10))
            draw.rectangle(box, fill="white" if img.mode == "RGB" else 255)
            draw.text((x, y), name, fill=ink, font=_font(10))
    return out


def _output(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save_pil(img, path: Path, **options) -> Path:
    """A PIL image to `path` through a temp file, in the format its suffix names (PNG when it names none)."""
    from PIL import Image

    from flowzoo.atomic import atomic_write

    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    return atomic_write(path, lambda handle: img.save(handle, format=fmt, **options))


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int = 10, scale: int = 4, pad: int = 1,
                    title: str | None = None, labels: list[str] | None = None) -> Path:
    """Write (N, C, H, W) images in [-1, 1] (C = 1 or 3) as a PNG grid, `nrow` per row, each pixel `scale`x,
    under `title`, with `labels` (one per image, e.g. its class) as column headers or per-cell tags."""
    path = _output(path)
    h, w = images.shape[-2:]
    tile = ((w + pad) * scale, (h + pad) * scale)
    img = image_grid(images, nrow, scale, pad)
    return _save_pil(captioned(img, title, labels, min(nrow, len(images)), tile), path)


def save_video_strips(clips: torch.Tensor, path: str | Path, max_frames: int = 16, scale: int | None = None,
                      title: str | None = None) -> Path:
    """Write (N, C, F, H, W) clips in [-1, 1] as a PNG: one clip per row, its frames left to right.

    Clips longer than ``max_frames`` show every k-th frame. ``scale`` defaults to enlarging small
    frames to about 64 px.
    """
    x = torch.as_tensor(clips).detach()
    n, c, f, h, w = x.shape
    x = x[:, :, ::max(1, -(-f // max_frames))]
    frames = x.shape[2]
    tiles = x.transpose(1, 2).reshape(n * frames, c, h, w)
    return save_image_grid(tiles, path, nrow=frames, scale=scale or max(1, 64 // max(h, w)), title=title)


def save_video_gif(clips: torch.Tensor, path: str | Path, nrow: int = 4, fps: float = 8.0, scale: int | None = None) -> Path:
    """Write (N, C, F, H, W) clips in [-1, 1] as an animated GIF: a grid of clips, `nrow` per row, playing in step."""
    x = torch.as_tensor(clips).detach()
    h, w = x.shape[-2:]
    scale = scale or max(1, 64 // max(h, w))
    frames = [image_grid(x[:, :, k], nrow, scale).convert("RGB") for k in range(x.shape[2])]
    return _save_pil(frames[0], _output(path), save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)


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
    from flowzoo.atomic import atomic_write

    path = _output(path)
    return atomic_write(path, lambda handle: fig.savefig(handle, format=path.suffix.lstrip(".").lower() or "png"))
