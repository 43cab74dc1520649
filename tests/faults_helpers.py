"""Shared pieces of the fault suite (tests/test_faults_*.py): a tiny toy run, and what each case asserts."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowzoo import atomic, fault_hook, run_lock

# 8 steps of a 16-wide MLP on moons: a checkpoint and a metrics line every 2 steps, all checkpoints kept.
TOY = ["run", "--objective", "flow_matching", "--data", "toy:moons", "--steps", "8", "--batch-size", "16",
       "--threads", "1", "--quiet", "--set", "train.log_every=2", "--set", "train.checkpoint_every=2",
       "--set", "train.keep_last=10", "--set", "train.warmup_steps=2", "--set", "backbone.width=16",
       "--set", "backbone.depth=1", "--set", "eval.num_samples=64", "--set", "eval.previews=false"]


def toy_args(out: Path) -> list[str]:
    return [*TOY, "--out", str(out)]


def run_subprocess(args: list[str], fault: str | None = None, **popen) -> subprocess.Popen:
    """`python -m flowzoo ARGS` in a child process, FLOWZOO_FAULT set to ``fault``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(fault_hook.ENV, None)
    if fault:
        env[fault_hook.ENV] = fault
    return subprocess.Popen([sys.executable, "-m", "flowzoo", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def arm(monkeypatch, fault: str) -> None:
    """Set FLOWZOO_FAULT for an in-process call, with the hook's write counter reset."""
    monkeypatch.setattr(fault_hook, "_seen", {})
    monkeypatch.setenv(fault_hook.ENV, fault)


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest), less temp files and the lock file (a pid)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file() and not atomic.is_temp(p) and p.name != run_lock.LOCK_NAME}


def assert_kept(before: dict[str, str], folder: Path) -> None:
    """Every file in ``before`` still exists with the same bytes (nothing the user had was lost)."""
    after = checksums(folder)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"files lost or changed: {changed}"


def assert_one_sentence(err: str, *phrases: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip() and "UserWarning" not in line
             and "row.update(" not in line]
    assert len(lines) == 1, err
    for phrase in phrases:
        assert phrase in lines[0], err


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["step"])


def final_numbers(out: Path) -> tuple[dict, dict]:
    """(the last metrics line without timings, result.json's metrics): what a resumed run must reproduce."""
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = {k: v for k, v in lines[-1].items() if k not in ("steps_per_s", "wall_time")}
    return last, json.loads((out / "result.json").read_text())["results"]


# Fixtures shared by the fault files (imported there by name): one finished toy run per module, and a
# fresh copy of it per test to damage.
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from test_cli import flowzoo

    out = tmp_path_factory.mktemp("finished") / "run"
    assert flowzoo(*toy_args(out))[0] == 0
    return out, final_numbers(out)


@pytest.fixture
def run_copy(finished, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    return out
