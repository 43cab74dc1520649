"""An ImageNet train folder (``DIR/<synset>/<image>``) read with ADM's centre crop.

ADM (Dhariwal & Nichol 2021, guided-diffusion ``center_crop_arr``), which DiT, MeanFlow and alpha-Flow
use for ImageNet-256: while the short side is at least twice the target, halve the image with a box
filter (cheap, and anti-aliased); then a bicubic resize puts the short side at the target; then a
centre crop of target x target. Class indices are the positions of the synset folder names in sorted
order (the torchvision ImageFolder convention, so index 0 is n01440764 on ImageNet-1k).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def center_crop_arr(image: Image.Image, image_size: int = 256) -> np.ndarray:
    """ADM's centre crop of a PIL image: (image_size, image_size, 3) uint8."""
    image = image.convert("RGB")
    while min(image.size) >= 2 * image_size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = image_size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
    return arr[top:top + image_size, left:left + image_size]


@dataclass
class ImageFolderIndex:
    """Every image file of a synset-folder tree, sorted, with its class index."""

    root: Path
    classes: list[str]
    files: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)


def scan_image_folder(root: str | Path) -> ImageFolderIndex:
    """Index ``root/<synset>/*.{jpeg,png,...}``; raises ValueError with one sentence if it is not such a tree."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder; pass the ImageNet train folder (one sub-folder per synset) with --data.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class sub-folders; pass the ImageNet train folder (e.g. .../ILSVRC2012/train).")
    index = ImageFolderIndex(root, classes)
    for label, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                index.files.append(path)
                index.labels.append(label)
    if not index.files:
        raise ValueError(f"{root} has class folders but no images ({', '.join(IMAGE_SUFFIXES)}).")
    return index


def load_cropped(path: str | Path, image_size: int = 256) -> np.ndarray | None:
    """The centre-cropped uint8 image, or None if the file cannot be decoded (the caller reports it)."""
    try:
        with Image.open(path) as image:
            return center_crop_arr(image, image_size)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
