"""A small CNN for 8x8 digits: the feature extractor (64-d) and judge behind the digits metrics.

Trained on the digits TRAIN split only (1,497 images; the 300 held-out images are used once, after
training, to report accuracy; nothing is selected on them). Shipped as safetensors (loading never runs
code) next to a JSON record of the command, seed, held-out accuracy, torch version and the weights'
sha256, which `load_digits_classifier` checks. Rebuild the shipped files with

    flowzoo prepare digits-classifier --out flowzoo/assets/digits_classifier.safetensors --seed 0
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from flowzoo import atomic
from flowzoo.atomic import atomic_write, write_json
from flowzoo.eval.fid import sha256_file

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


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to one pixel (pad with background -1, random 8x8 crop): cheap augmentation."""
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dx, dy = torch.randint(0, 3, (2, len(x)), generator=gen)
    rows = (torch.arange(8)[None, :] + dy[:, None])[:, None, :, None].expand(-1, 1, 8, 10)
    padded = padded.gather(2, rows)
    cols = (torch.arange(8)[None, :] + dx[:, None])[:, None, None, :].expand(-1, 1, 8, 8)
    return padded.gather(3, cols)


@torch.no_grad()
def accuracy(model: DigitsClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(dim=1) == y).float().mean().item()


def train_digits_classifier(out_path: str | Path = DEFAULT_PATH, seed: int = 0, epochs: int = 40,
                            batch_size: int = 64, lr: float = 2e-3) -> dict:
    """Train on the train split, write `out_path` (safetensors) and its `.json` record; return the record."""
    from safetensors.torch import save

    from flowzoo.data.digits import Digits, split_fingerprint

    data = Digits()
    x, y = data.train_tensors()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):  # do not disturb the caller's global RNG
            torch.manual_seed(seed)
            model = DigitsClassifier()
            gen = torch.Generator().manual_seed(seed)
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
            steps = epochs * ((len(x) + batch_size - 1) // batch_size)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
            for _ in range(epochs):
                model.train()
                for idx in torch.randperm(len(x), generator=gen).split(batch_size):
                    loss = F.cross_entropy(model(_shift(x[idx], gen)), y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
    finally:
        torch.use_deterministic_algorithms(deterministic)
    model.eval()
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
    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    return write_pair(out_path, weights, record)


def staged_path(path: Path) -> Path:
    """Where new weights wait between the record's commit and their rename (see ``write_pair``)."""
    return path.with_name(f".{path.name}.staged")


def write_pair(path: Path, weights: bytes, record: dict) -> dict:
    """Write the weights and their JSON record so that a kill at any moment leaves the old pair or the new one.

    1. the new weights go to a staged file beside the old ones (written atomically);
    2. the record, naming the new weights' sha256, replaces the old record: the commit point;
    3. the staged weights are renamed over the old ones.
    A kill before 2 leaves the old pair (and a staged file, replaced by the next prepare); a kill between
    2 and 3 leaves the new record beside the staged weights it names, which ``load_digits_classifier``
    finds and completes. The files keep the mode of those they replace (new ones get 0644, as shipped
    assets must be readable by every user), whatever the umask."""
    path = Path(path)
    record_path, staged = path.with_suffix(".json"), staged_path(path)
    mode = {p: stat.S_IMODE(p.stat().st_mode) if p.is_file() else 0o644 for p in (path, record_path)}
    atomic_write(staged, lambda handle: handle.write(weights))
    os.chmod(staged, mode[path])
    record = {**record, "sha256": hashlib.sha256(weights).hexdigest()}
    write_json(record_path, record)
    os.chmod(record_path, mode[record_path])
    _complete(staged, path)
    return record


def _complete(staged: Path, path: Path) -> None:
    atomic.replace(staged, path)
    atomic.fsync_dir(path.parent)


@functools.lru_cache(maxsize=4)
def load_digits_classifier(path: str | Path = DEFAULT_PATH) -> DigitsClassifier:
    """The classifier in eval mode, after checking the weights' sha256 against the JSON record."""
    from safetensors.torch import load_file

    path = Path(path)
    record_path = path.with_suffix(".json")
    rebuild = f"flowzoo prepare digits-classifier --out {path} --seed 0"
    staged = staged_path(path)
    if not record_path.exists() or not (path.exists() or staged.exists()):
        raise FileNotFoundError(f"digits classifier weights or record missing at {path}; rebuild them with "
                                f"`{rebuild}`.")
    try:
        expected = json.loads(record_path.read_text())["sha256"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"digits classifier record {record_path} is unreadable; rebuild with `{rebuild}`.") from None
    if not path.exists() or sha256_file(path) != expected:
        if not (staged.is_file() and sha256_file(staged) == expected):
            raise ValueError(f"digits classifier {path} does not match the sha256 in {record_path.name}; rebuild "
                             f"with `{rebuild}`.")
        try:  # a `prepare` killed after committing the record: finish its last rename
            _complete(staged, path)
        except OSError:  # e.g. a read-only install: read the staged file, which the record names
            path = staged
    model = DigitsClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False)
