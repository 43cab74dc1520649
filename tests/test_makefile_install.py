"""The README's install step refuses, in one sentence, to start on a disk without room for torch.

CI once stopped half-way through `pip install` with "[Errno 28] No space left on device" and a traceback. The
Makefile now reads the free space first. These tests run its install target against a fake `df` (reporting
a full or a roomy disk) and a fake `python3` that only records that it was called, so nothing is installed.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _make_install(tmp_path: Path, free_kb: int) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # POSIX `df -Pk` output: a header, then filesystem, size, used, available (1K blocks), capacity, mount.
    _script(bin_dir / "df", f'echo "Filesystem 1024-blocks Used Available Capacity Mounted on"\n'
                            f'echo "/dev/fake 999999999 1 {free_kb} 99% /"\n')
    _script(bin_dir / "python3", 'echo "python3 called: $*"\nexit 3\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(
        ["make", "-C", str(REPO), f"VENV={tmp_path / 'venv'}", "install"],
        env=env, capture_output=True, text=True, timeout=60,
    )


def test_install_on_a_full_disk_says_so_in_one_sentence_and_installs_nothing(tmp_path: Path) -> None:
    result = _make_install(tmp_path, free_kb=2 * 1024 * 1024)  # 2 GB free
    assert result.returncode != 0
    assert "Installing needs about 7 GB free here" in result.stdout
    assert "2 GB is free on this disk" in result.stdout
    assert "python3 called" not in result.stdout  # stopped before creating the venv
    assert not (tmp_path / "venv").exists()


def test_install_with_room_goes_on_to_create_the_venv(tmp_path: Path) -> None:
    result = _make_install(tmp_path, free_kb=100 * 1024 * 1024)  # 100 GB free
    assert "Installing needs" not in result.stdout
    assert f"python3 called: -m venv {tmp_path / 'venv'}" in result.stdout
