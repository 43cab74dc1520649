"""Fashion-MNIST: 70,000 grey 28x28 images of 10 clothing classes (Zalando Research, MIT licence).

Read from the data set's original IDX files in `data.path` (default: where Debian's package
`dataset-fashion-mnist` puts them, /usr/share/datasets/fashion-mnist/), each either plain or gzipped:
    train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte
Nothing is downloaded at run time: a missing, truncated or corrupt file is a ValueError of one sentence
that names the file, what is wrong and where to get the files. The files are read and checked when the
dataset is built, so a run stops before it writes anything.

Pixels 0..255 are mapped to [-1, 1] by x = p / 127.5 - 1 (background -1, as digits), and each 28x28
image is padded to 32x32 with 2 pixels of background (-1, i.e. pixel value 0) on every side, so patch
sizes 2, 4 and 8 divide it; the pad is the images' own black border made wider, not a grey frame.
sample_shape (1, 32, 32), 10 classes, names in `classes`.

Split: the data set's own. The 60,000 train images are the training split; the held-out split is all
10,000 t10k images (1,000 per class, so class-balanced like digits' held-out). Digits draws its held-out
set with a fixed seed only because scikit-learn ships no split; Fashion-MNIST's test set is the one every
published number on it uses, and it needs no seed to pin. Training streams see only the train split;
`reference()` returns held-out images, never trained on.

Images are kept as uint8 28x28 (55 MB for all 70,000) and scaled and padded per batch, so a run does
not hold the 290 MB of float32 32x32 copies.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from flowzoo.data.idx import IDXError, read_idx
from flowzoo.data.stream import REFERENCE, EpochStream, generator
from flowzoo.registry import DATASETS

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
NUM_CLASSES = 10
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IMAGE_SIDE, PADDED_SIDE = 28, 32
PAD = (PADDED_SIDE - IMAGE_SIDE) // 2
# split -> (images file, labels file), as the data set's release names them
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "heldout": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
WHERE_TO_GET = ("get the four files with `sudo apt install dataset-fashion-mnist` (Debian/Ubuntu; `make fashion-data` "
                "runs it), or from github.com/zalandoresearch/fashion-mnist (data/fashion) into a folder passed as "
                "data.path (--set data.path=FOLDER; `flowzoo bench fashion --data FOLDER`)")


def find_file(root: Path, name: str) -> Path:
    """`root/name`, else `root/name.gz`; a missing file is one sentence saying where to get it."""
    for path in (root / name, root / f"{name}.gz"):
        if path.is_file():
            return path
    raise ValueError(f"fashion_mnist: {root / name} (or .gz) does not exist; {WHERE_TO_GET}.")


def read_checked(path: Path, ndim: int) -> np.ndarray:
    """read_idx, with any problem turned into one sentence naming the file and where to get a good one."""
    try:
        return read_idx(path, ndim)
    except IDXError as exc:
        raise ValueError(f"fashion_mnist: {path} is not a usable IDX file: {exc}; {WHERE_TO_GET}.") from None
    except OSError as exc:
        raise ValueError(f"fashion_mnist: {path} cannot be read ({exc.strerror or exc}); {WHERE_TO_GET}.") from None


def read_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 28, 28), long labels (N,)) of one split, with shapes, counts and labels checked."""
    image_path, label_path = (find_file(root, name) for name in FILES[split])
    images, labels = read_checked(image_path, 3), read_checked(label_path, 1)
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError(f"fashion_mnist: {image_path} holds images of {images.shape[1]}x{images.shape[2]} pixels, "
                         f"not 28x28; {WHERE_TO_GET}.")
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"fashion_mnist: {image_path} holds {len(images):,} images but {label_path} "
                         f"{len(labels):,} labels (they must match, and be at least one); {WHERE_TO_GET}.")
    if labels.max() >= NUM_CLASSES:
        raise ValueError(f"fashion_mnist: {label_path} holds the label {int(labels.max())}, outside 0..9; {WHERE_TO_GET}.")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def file_stamps(root: Path) -> tuple:
    """(path, size, mtime) of every file found: the cache key, so a file replaced on disk is read again."""
    paths = [find_file(root, name) for pair in FILES.values() for name in pair]
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


@functools.lru_cache(maxsize=2)
def _load(root: str, stamps: tuple) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Both splits of `root`, cached per process (stamps only key the cache)."""
    return {split: read_split(Path(root), split) for split in FILES}


def to_model_space(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 32, 32) in [-1, 1], padded with the background value -1."""
    x = pixels.to(torch.float32).unsqueeze(1) / 127.5 - 1.0
    return torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD), value=-1.0)


class PixelStream(EpochStream):
    """EpochStream over uint8 images that scales and pads each batch as it is drawn."""

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, labels = super().next()
        return to_model_space(pixels), labels


@DATASETS.register("fashion_mnist")
class FashionMNIST:
    """Class-conditional Fashion-MNIST at 32x32; train split for training, t10k (held-out) for evaluation."""

    name = "fashion_mnist"
    sample_shape = (1, PADDED_SIDE, PADDED_SIDE)
    num_classes = NUM_CLASSES
    classes = CLASSES

    def __init__(self, path: str | Path = DEFAULT_ROOT, **unknown):
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join('data.' + k for k in sorted(unknown))} for fashion_mnist; valid: path.")
        self.root = Path(path).expanduser()  # data.path, as for the other data sets on disk
        if not self.root.is_dir():
            raise ValueError(f"fashion_mnist: the folder {self.root} does not exist; {WHERE_TO_GET}.")
        self._splits = _load(str(self.root), file_stamps(self.root))  # read and checked now, before a run writes

    def pixels(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images (N, 28, 28), labels (N,)) of "train" or "heldout", as stored in the files."""
        return self._splits[split]

    def train_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of the 60,000 training images, in [-1, 1] at 32x32 (246 MB of float32: for metrics, not training)."""
        pixels, labels = self.pixels("train")
        return to_model_space(pixels), labels

    def heldout_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of the 10,000 held-out (t10k) images, in file order."""
        pixels, labels = self.pixels("heldout")
        return to_model_space(pixels), labels

    def stream(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> PixelStream:
        pixels, labels = self.pixels("train")
        return PixelStream(pixels, labels, batch_size, seed, rank, world_size)

    def reference(self, n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """n held-out images (all when n is None or their number; otherwise a seeded random subset)."""
        pixels, labels = self.pixels("heldout")
        if n is None or n == len(pixels):
            return to_model_space(pixels), labels
        if not 0 < n <= len(pixels):
            raise ValueError(f"fashion_mnist has {len(pixels)} held-out images; ask reference() for 1..{len(pixels)} of them, not {n}.")
        idx = torch.randperm(len(pixels), generator=generator(REFERENCE, seed))[:n]
        return to_model_space(pixels[idx]), labels[idx]

    def class_means(self) -> torch.Tensor:
        """(10, 1, 32, 32): the mean training image of each class (a degenerate 'generator' for baselines)."""
        pixels, labels = self.pixels("train")
        means = torch.stack([pixels[labels == c].to(torch.float64).mean(dim=0) for c in range(NUM_CLASSES)])
        return to_model_space(means).to(torch.float32)  # scaling is linear, so the mean commutes with it

    def __repr__(self) -> str:
        return f"FashionMNIST(path={str(self.root)!r})"
