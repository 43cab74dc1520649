"""What the shipped feature classifiers (digits, Fashion-MNIST) share: a deterministic trainer, and a
weights + JSON record pair that is written kill-safely and checked by sha256 when loaded.

A classifier module supplies its architecture (an nn.Module class with `features(x)` and `head`) and its
data; this module trains it on the train split only and stores it as safetensors (loading never runs
code) beside a JSON record that names the weights' sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from flowzoo import atomic
from flowzoo.atomic import atomic_write, write_json
from flowzoo.eval.fid import sha256_file


def random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Random translation by up to `max_shift` pixels each way (pad with the background -1, random crop back
    to the input size): cheap augmentation that keeps every pixel value a real one."""
    if max_shift == 0:
        return x
    height, width = x.shape[-2:]
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, len(x)), generator=gen)
    channels = x.shape[1]
    rows = (torch.arange(height)[None, :] + dy[:, None])[:, None, :, None].expand(-1, channels, height, padded.shape[-1])
    padded = padded.gather(2, rows)
    cols = (torch.arange(width)[None, :] + dx[:, None])[:, None, None, :].expand(-1, channels, height, width)
    return padded.gather(3, cols)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The model's predicted classes, in batches so that 60,000 images do not need one huge activation."""
    model.eval()
    return torch.cat([model(chunk).argmax(dim=1) for chunk in x.split(batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (predict(model, x) == y).float().mean().item()


def train_classifier(architecture: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor, *, seed: int,
                     epochs: int, batch_size: int, lr: float, max_shift: int,
                     weight_decay: float = 1e-4) -> nn.Module:
    """`architecture()` trained on (x, y) with AdamW and a one-cycle schedule, in eval mode.

    Deterministic for a seed on one machine: initialisation from torch.manual_seed(seed), batch order and
    shifts from a generator of the same seed, deterministic kernels, and one thread (the same code on two
    threads gave other weights: reductions split over threads add in another order); the caller's global
    RNG and thread count are restored. x is the train split only: nothing is selected on held-out data."""
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):  # do not disturb the caller's global RNG
            torch.manual_seed(seed)
            model = architecture()
            gen = torch.Generator().manual_seed(seed)
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
            steps = epochs * ((len(x) + batch_size - 1) // batch_size)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
            for _ in range(epochs):
                model.train()
                for idx in torch.randperm(len(x), generator=gen).split(batch_size):
                    loss = F.cross_entropy(model(random_shift(x[idx], gen, max_shift)), y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
    return model.eval()


def save_classifier(path: str | Path, model: nn.Module, record: dict) -> dict:
    """The model's weights (safetensors) at `path` and `record` + their sha256 beside it as .json."""
    from safetensors.torch import save

    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    return write_pair(Path(path), weights, record)


def staged_path(path: Path) -> Path:
    """Where new weights wait between the record's commit and their rename (see ``write_pair``)."""
    return path.with_name(f".{path.name}.staged")


def write_pair(path: Path, weights: bytes, record: dict) -> dict:
    """Write the weights and their JSON record so that a kill at any moment leaves the old pair or the new one.

    1. the new weights go to a staged file beside the old ones (written atomically);
    2. the record, naming the new weights' sha256, replaces the old record: the commit point;
    3. the staged weights are renamed over the old ones.
    A kill before 2 leaves the old pair (and a staged file, replaced by the next prepare); a kill between
    2 and 3 leaves the new record beside the staged weights it names, which ``load_classifier`` finds and
    completes. The files keep the mode of those they replace (new ones get 0644, as shipped assets must be
    readable by every user), whatever the umask."""
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


def load_classifier(architecture: Callable[[], nn.Module], path: str | Path, what: str, rebuild: str) -> nn.Module:
    """`architecture()` with the weights at `path`, in eval mode without gradients, after checking their
    sha256 against the JSON record beside them. `what` names the classifier and `rebuild` the command that
    remakes the pair, for the one-sentence errors."""
    from safetensors.torch import load_file

    path = Path(path)
    record_path = path.with_suffix(".json")
    staged = staged_path(path)
    if not record_path.exists() or not (path.exists() or staged.exists()):
        raise FileNotFoundError(f"{what} weights or record missing at {path}; rebuild them with `{rebuild}`.")
    try:
        expected = json.loads(record_path.read_text())["sha256"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{what} record {record_path} is unreadable; rebuild with `{rebuild}`.") from None
    if not path.exists() or sha256_file(path) != expected:
        if not (staged.is_file() and sha256_file(staged) == expected):
            raise ValueError(f"{what} {path} does not match the sha256 in {record_path.name}; rebuild "
                             f"with `{rebuild}`.")
        try:  # a `prepare` killed after committing the record: finish its last rename
            _complete(staged, path)
        except OSError:  # e.g. a read-only install: read the staged file, which the record names
            path = staged
    model = architecture()
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False)
