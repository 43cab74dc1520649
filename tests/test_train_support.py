"""Shared pieces of the training tests (no tests here): a tiny resumable data stream, nets, subprocess helpers.

The stream follows the flowzoo.data contract (``next() -> (x, y)``, ``state_dict``, ``load_state_dict``)
without depending on flowzoo.data: batch k is a pure function of (seed, k), like the real streams.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TESTS_DIR = Path(__file__).parent
REPO = TESTS_DIR.parent


def _seed(*keys: int) -> int:
    return int.from_bytes(hashlib.blake2b(repr(keys).encode(), digest_size=8).digest(), "little") >> 1


class MixtureStream:
    """Class-conditional Gaussian mixture batches of ``shape``; ``delay`` seconds per batch slows a run down."""

    def __init__(self, batch_size: int, seed: int, shape=(1, 8, 8), num_classes: int = 10, delay: float = 0.0):
        self.batch_size, self.seed, self.shape, self.num_classes, self.delay = batch_size, seed, shape, num_classes, delay
        self.means = torch.randn(num_classes, *shape, generator=torch.Generator().manual_seed(1234))
        self.position = 0

    def next(self):
        if self.delay:
            time.sleep(self.delay)
        g = torch.Generator().manual_seed(_seed(self.seed, self.position))
        self.position += 1
        y = torch.randint(0, self.num_classes, (self.batch_size,), generator=g)
        x = self.means[y] + 0.3 * torch.randn(self.batch_size, *self.shape, generator=g)
        return x, y

    def state_dict(self):
        return {"position": self.position, "seed": self.seed}

    def load_state_dict(self, state):
        self.position = int(state["position"])


class MixtureDataset:
    """A dataset with only the contract's ``stream(batch_size, seed)`` (no rank arguments)."""

    sample_shape = (1, 8, 8)
    num_classes = 10

    def stream(self, batch_size: int, seed: int) -> MixtureStream:
        return MixtureStream(batch_size, seed)


def tiny_dit(seed: int = 0):
    from flowzoo.backbones import create_backbone

    torch.manual_seed(seed)
    return create_backbone("DiT-tiny/2", input_size=8, in_channels=1, num_classes=10)


def tiny_mlp(seed: int = 0):
    from flowzoo.backbones import create_backbone

    torch.manual_seed(seed)
    return create_backbone("mlp", sample_shape=(1, 8, 8), num_classes=10, width=32, depth=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    """One thread per process: two cores shared by several test processes must not oversubscribe."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(TESTS_DIR))
    env.update(extra)
    return env


def launch(script: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=subprocess_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{out}"
    return out


@pytest.fixture
def one_thread():
    """Two cores shared with other processes: one intra-op thread avoids OpenMP oversubscription stalls.
    Test modules import it and mark it autouse through `pytestmark` or use it by name."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
