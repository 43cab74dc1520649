"""Fault suite, benchmark grid: a suite killed inside one cell keeps its finished cells and resumes the cell."""

from __future__ import annotations

import pytest

from faults_helpers import arm, assert_kept, checkpoint_step, checksums
from flowzoo.leaderboard.record import read_record
from flowzoo.registry import BENCHMARKS
from test_bench_suites import tiny_suite
from test_cli import flowzoo

BUDGET = {"train.steps": 6, "train.log_every": 2, "train.sample_every": 6, "train.checkpoint_every": 2,
          "train.keep_last": 10, "train.warmup_steps": 2, "backbone.width": 16, "backbone.depth": 1,
          "eval.num_samples": 200, "eval.previews": False}


@pytest.fixture
def grid():
    BENCHMARKS.add("faults-grid", tiny_suite("faults-grid", budget=dict(BUDGET)))
    yield "faults-grid"
    BENCHMARKS._entries.pop("faults-grid")


def test_faults_bench_killed_mid_grid_keeps_finished_cells_and_resumes(grid, tmp_path, monkeypatch, capsys):
    runs, results = tmp_path / "runs", tmp_path / "results"
    # --allow-dirty: the cells' records are valid whether or not this checkout has uncommitted changes.
    common = ["--runs", str(runs), "--results", str(results), "--jobs", "1", "--threads", "1", "--allow-dirty"]
    # The runner's cell processes inherit FLOWZOO_FAULT: the mf cell dies writing its step-6 metrics line.
    arm(monkeypatch, "*/mf-s0/metrics.jsonl:3:kill")
    code, out, err = flowzoo("bench", grid, *common, capsys=capsys)
    assert code == 1 and "Traceback" not in err and "mf-s0 exited with code -9" in out
    fm_record = results / grid / "toy-8gaussians" / "fm-s0.json"
    mf_dir = runs / grid / "toy-8gaussians" / "mf-s0"
    assert read_record(fm_record)["method"] == "fm" and checkpoint_step(mf_dir / "checkpoints" / "latest.pt") == 4
    kept = {**{f"r/{k}": v for k, v in checksums(results).items()},
            **{f"c/{k}": v for k, v in checksums(mf_dir / "checkpoints").items() if k != "latest.pt"}}

    monkeypatch.delenv("FLOWZOO_FAULT")
    code, out, err = flowzoo("bench", grid, *common, capsys=capsys)
    assert code == 0 and "1 have valid records" in out and "1 to run" in out, out + err
    after = {**{f"r/{k}": v for k, v in checksums(results).items()},
             **{f"c/{k}": v for k, v in checksums(mf_dir / "checkpoints").items()}}
    assert not [k for k, v in kept.items() if after.get(k) != v]  # fm's record and mf's step-2/4 checkpoints as they were
    assert read_record(results / grid / "toy-8gaussians" / "mf-s0.json")["compute"]["steps"] == 6
    # Resumed, not restarted: a restart would have rewritten step-00000002.pt and step-00000004.pt.
    assert "c/step-00000004.pt" in after and checkpoint_step(mf_dir / "checkpoints" / "latest.pt") == 6
