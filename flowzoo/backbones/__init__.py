"""Backbones: networks u(z, t, h, y) -> average velocity, shaped like z (DESIGN.md §1, §3).

Contract every registered backbone follows:
- ``forward(z, t, h, y=None)``: t and h = t - r are raw times in [0, 1], scalars or one per sample;
  y is (B,) long class labels, ``num_classes`` being the null label, y=None meaning all-null.
- attributes ``num_classes`` (0 = unconditional: only the null label 0 exists) and ``sample_shape``.

    net = create_backbone("DiT-B/2", input_size=32, in_channels=4, num_classes=1000)
    net = create_backbone("VideoDiT-S/4", input_size=64, num_frames=16, in_channels=3, num_classes=700)
    list_backbones("DiT-*/2")
"""

from __future__ import annotations

import fnmatch
import inspect

from torch import nn

from flowzoo.backbones import dit, mlp, video_dit  # noqa: F401  (registers the built-ins)
from flowzoo.backbones.dit import DiT
from flowzoo.backbones.mlp import ResidualMLP
from flowzoo.backbones.video_dit import VideoDiT
from flowzoo.registry import BACKBONES

__all__ = ["DiT", "VideoDiT", "ResidualMLP", "create_backbone", "list_backbones"]


def create_backbone(name: str, *, trusted: bool = True, **kwargs) -> nn.Module:
    """Build the backbone registered as ``name`` (or ``"pkg.module:attr"``) with keyword overrides.

    ``trusted=False`` when the name comes from a run directory: registered names only, nothing imported."""
    factory = BACKBONES.get(name, trusted=trusted)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise TypeError(f"backbone '{name}' does not accept these arguments ({exc}); check the backbone section of your config.") from None
    except ValueError:  # some callables have no inspectable signature; let the call itself complain
        pass
    return factory(**kwargs)


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered backbone names matching a shell-style pattern, e.g. ``"DiT-*/2"``."""
    return [n for n in BACKBONES.names() if fnmatch.fnmatchcase(n, pattern)]
