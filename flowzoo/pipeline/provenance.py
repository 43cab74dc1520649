"""Where a number came from: config hash, code version, package versions, compute, device and hardware."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from flowzoo.config import config_hash
from flowzoo.precision import tf32_state

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


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty off Linux)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip() and fields:
            break
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str | None:
    """The CPU's marketing name ("model name" in /proc/cpuinfo on Linux), else what platform knows."""
    info = _cpuinfo()
    for key in ("model name", "Model", "cpu model"):
        if info.get(key):
            return info[key]
    return platform.processor() or platform.machine() or None


def cpu_id() -> str | None:
    """Vendor, family, model and stepping: they tell CPU generations apart where a VM names only "AMD EPYC"."""
    info = _cpuinfo()
    if not info.get("cpu family"):
        return None
    return f"{info.get('vendor_id', '?')} family {info['cpu family']} model {info.get('model', '?')} stepping {info.get('stepping', '?')}"


def cpu_capability() -> str | None:
    """The kernel set torch's CPU ops dispatch to (DEFAULT, AVX2, AVX512, ...; ATEN_CPU_CAPABILITY lowers it)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return None


def gpu_driver() -> str | None:
    """The NVIDIA driver version (from the kernel module, else nvidia-smi); None when neither answers."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        for word in text.split():
            if word.count(".") >= 1 and word.replace(".", "").isdigit():
                return word
    except OSError:
        pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = smi.stdout.split() if smi.returncode == 0 else []
    return lines[0] if lines else None


def hardware(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a number may depend on beyond code and seed: the CPU and torch's kernel set for it, and on CUDA
    the GPU, its driver and the CUDA / cuDNN versions. The same seed on another CPU (or another kernel set:
    AVX512 vs AVX2 reduce in another order) can differ by more than a method difference on small data."""
    out: dict[str, Any] = {"cpu_model": cpu_model(), "cpu_id": cpu_id(), "cpu_capability": cpu_capability(),
                           "machine": platform.machine()}
    device = torch.device(device)
    if device.type == "cuda":
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        out.update(gpu_name=torch.cuda.get_device_name(device), gpu_driver=gpu_driver(), cuda=torch.version.cuda,
                   cudnn=None if cudnn is None else str(cudnn))
    return out


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
        "hardware": hardware(device),
        "tf32": tf32_state(),  # what fp32 matmuls and convolutions ran in (train.tf32; flowzoo/precision.py)
    }
