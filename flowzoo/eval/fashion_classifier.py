"""A small CNN for Fashion-MNIST at 32x32: the feature extractor (64-d) and judge behind the fashion_mnist metric.

Trained on the 60,000 train images only (the 10,000 t10k images are used once, after training, to report
accuracy; nothing is selected on them), with the trainer the digits classifier uses (flowzoo/eval/classifier.py:
fixed seed, deterministic kernels, one thread). Shipped as safetensors (loading never runs code) next to a
JSON record of the command, seed, epochs, t10k accuracy, the data's sha256, the torch version and the weights'
sha256, which `load_fashion_classifier` checks. Rebuild the shipped files with

    OMP_NUM_THREADS=1 flowzoo prepare fashion-classifier --out flowzoo/assets/fashion_classifier.safetensors --seed 0

Sized for the project's shared 2-core machines: 16-32-64 channels and 90k parameters (351 KB), so training
takes minutes on one core and scoring 1,000 samples well under a second.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from flowzoo.eval.classifier import accuracy, load_classifier, save_classifier, train_classifier

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "assets" / "fashion_classifier.safetensors"
FEATURE_DIM = 64
DEFAULT_EPOCHS = 12


class FashionClassifier(nn.Module):
    """conv16-pool-conv32-pool-conv64-pool -> 64x4x4 -> Linear -> ReLU = 64-d features -> Linear -> 10 logits.

    64-d features, as digits: FD's upward bias grows with the dimension over the sample count, so a small
    space keeps FD at 1,000-2,000 samples steady."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 4 * 4, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, 10)
        self.dropout = nn.Dropout(0.3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 32, 32) in [-1, 1] -> (N, 64) penultimate activations (the Frechet-distance space)."""
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def split_sha256(data, split: str) -> str:
    """sha256 of one split's uint8 pixels then int64 labels, as decoded: the same for plain or gzipped files."""
    pixels, labels = data.pixels(split)
    digest = hashlib.sha256(pixels.contiguous().numpy().tobytes())
    digest.update(labels.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()


def train_fashion_classifier(out_path: str | Path = DEFAULT_PATH, seed: int = 0, epochs: int = DEFAULT_EPOCHS,
                             root: str | Path | None = None, batch_size: int = 128, lr: float = 2e-3) -> dict:
    """Train on the train split of the IDX files in `root` (default: Debian's), write `out_path` (safetensors)
    and its `.json` record; return the record."""
    from flowzoo.data.fashion_mnist import DEFAULT_ROOT, FashionMNIST

    data = FashionMNIST(root or DEFAULT_ROOT)
    x, y = data.train_tensors()
    # Shifts of up to 1 pixel, as for digits: the images are centred, and generated ones may sit a pixel off.
    model = train_classifier(FashionClassifier, x, y, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr,
                             max_shift=1)
    out_path = Path(out_path)
    command = f"flowzoo prepare fashion-classifier --out {out_path.as_posix()} --seed {seed} --epochs {epochs}"
    if data.root != Path(DEFAULT_ROOT):
        command += f" --data {data.root.as_posix()}"
    held_x, held_y = data.heldout_tensors()
    record = {
        "command": command,
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "threads": 1,
        "train_accuracy": round(accuracy(model, x, y), 6),
        "heldout_accuracy": round(accuracy(model, held_x, held_y), 6),  # the t10k test set
        "num_train": len(x),
        "num_heldout": len(held_y),
        "train_sha256": split_sha256(data, "train"),
        "heldout_sha256": split_sha256(data, "heldout"),
        "torch_version": torch.__version__,
    }
    return save_classifier(out_path, model, record)


@functools.lru_cache(maxsize=4)
def load_fashion_classifier(path: str | Path = DEFAULT_PATH) -> FashionClassifier:
    """The classifier in eval mode, after checking the weights' sha256 against the JSON record."""
    return load_classifier(FashionClassifier, path, "Fashion-MNIST classifier",
                           f"flowzoo prepare fashion-classifier --out {path} --seed 0")
