"""Where a number came from: config hash, code version, package versions, compute, device."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from flowzoo.config import config_hash

PACKAGES = ("flowzoo", "torch", "numpy", "timm", "scikit-learn")


def git_commit() -> dict[str, Any]:
    """The commit of the flowzoo checkout (and whether it had uncommitted changes), if it is one."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["torch"] = torch.__version__  # with the build tag (e.g. +cu130): CPU/GPU builds differ numerically
    return out


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _names(value: Any) -> set[str]:
    """Every string in a config (names of parts sit at any depth: objective.alpha.name, eval.samplers keys)."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(_names(k) | _names(v) for k, v in value.items())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*(_names(v) for v in value)) if value else set()
    return set()


def plugins_used(cfg: dict[str, Any], extra_names: Any = ()) -> dict[str, dict[str, Any]]:
    """{"kind:name": {"dist": ..., "version": ...}} for the plugin entries (not flowzoo's built-ins) that
    the config names, plus `extra_names` (e.g. the sampler an objective picks by default)."""
    from flowzoo.registry import ALL_REGISTRIES

    wanted = _names(cfg) | _names(list(extra_names))
    found = {}
    for kind, registry in ALL_REGISTRIES.items():
        for entry in registry.entries():
            if entry.source not in ("flowzoo", "import path") and entry.name in wanted:
                found[f"{kind}:{entry.name}"] = {"dist": entry.source, "version": entry.version}
    return found


def provenance(cfg: dict[str, Any], state) -> dict[str, Any]:
    device = next(state.net.parameters()).device
    return {
        "config_hash": config_hash(cfg),
        **git_commit(),
        "versions": versions(),
        "seed": cfg["seed"],
        "steps": state.step,
        "images_seen": state.images_seen,
        "wall_time_s": round(state.wall_time, 2),
        "skipped_steps": state.skipped_steps,
        "world_size": state.world_size,
        "device": device_name(device),
        "threads": torch.get_num_threads(),  # CPU wall times mean little without it (flowzoo run --threads)
    }
