"""A small CNN for 8x8 digits: the feature extractor (64-d) and judge behind the digits metrics.

Trained on the digits TRAIN split only (1,497 images; the 300 held-out images are used once, after
training, to report accuracy; nothing is selected on them). Shipped as safetensors (loading never runs
code) next to a JSON record of the command, seed, held-out accuracy, torch version and the weights'
sha256, which `load_digits_classifier` checks (trainer and checks shared with Fashion-MNIST's classifier in
flowzoo/eval/classifier.py). Rebuild the shipped files with

    flowzoo prepare digits-classifier --out flowzoo/assets/digits_classifier.safetensors --seed 0
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from flowzoo.eval.classifier import accuracy, load_classifier, save_classifier, train_classifier
from flowzoo.eval.classifier import staged_path, write_pair  # noqa: F401  (importable from here, as before)

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "assets" / "digits_classifier.safetensors"
FEATURE_DIM = 64


class DigitsClassifier(nn.Module):
    """conv32-conv64-pool-conv64-pool -> 256 -> Linear -> ReLU = 64-d features -> Linear -> 10 logits."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 2 * 2, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, 10)
        self.dropout = nn.Dropout(0.3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 8, 8) in [-1, 1] -> (N, 64) penultimate activations (the Frechet-distance space)."""
        h = F.relu(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def train_digits_classifier(out_path: str | Path = DEFAULT_PATH, seed: int = 0, epochs: int = 40,
                            batch_size: int = 64, lr: float = 2e-3) -> dict:
    """Train on the train split, write `out_path` (safetensors) and its `.json` record; return the record."""
    from flowzoo.data.digits import Digits, split_fingerprint

    data = Digits()
    x, y = data.train_tensors()
    model = train_classifier(DigitsClassifier, x, y, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr,
                             max_shift=1)
    out_path = Path(out_path)
    record = {
        "command": f"flowzoo prepare digits-classifier --out {out_path.as_posix()} --seed {seed} --epochs {epochs}",
        "seed": seed,
        "epochs": epochs,
        "train_accuracy": round(accuracy(model, x, y), 6),
        "heldout_accuracy": round(accuracy(model, *data.heldout_tensors()), 6),
        "num_train": len(x),
        "num_heldout": len(data.heldout_tensors()[1]),
        "heldout_split_sha256": split_fingerprint(),
        "torch_version": torch.__version__,
    }
    return save_classifier(out_path, model, record)


@functools.lru_cache(maxsize=4)
def load_digits_classifier(path: str | Path = DEFAULT_PATH) -> DigitsClassifier:
    """The classifier in eval mode, after checking the weights' sha256 against the JSON record."""
    return load_classifier(DigitsClassifier, path, "digits classifier",
                           f"flowzoo prepare digits-classifier --out {path} --seed 0")
