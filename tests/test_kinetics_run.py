"""Kinetics-700 end to end: raw mp4s -> `flowzoo run` (tiny video DiT) -> FVD in result.json -> a valid record.

The videos and the annotation CSV are written by tests/video_standins.py (PyAV); the I3D is the stand-in
TorchScript net of test_fvd.py, given as data.fvd.weights exactly like i3d_torchscript.pt.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from flowzoo.bench.suite import get_suite, with_overrides
from flowzoo.leaderboard.from_run import record_from_run
from test_cli import flowzoo
from video_standins import write_kinetics_standin, write_standin_i3d

TINY_VIDEO = ["--backbone", "VideoDiT-tiny/4", "--steps", "2", "--batch-size", "4", "--quiet",
              "--set", "data.frames=4", "--set", "data.resolution=16", "--set", "data.workers=0",
              "--set", "train.warmup_steps=1", "--set", "train.log_every=1", "--set", "eval.num_samples=8",
              "--set", "eval.previews=false", "--set", "train.precision=fp32"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root, _ = write_kinetics_standin(tmp_path_factory.mktemp("kinetics"))
    return root, write_standin_i3d(tmp_path_factory.mktemp("i3d") / "standin_i3d.pt")


def test_raw_videos_to_a_result_record_with_fvd(videos, tmp_path, capsys):
    root, weights = videos
    out = tmp_path / "run"
    fvd = f"data.fvd={{weights: {weights}, num_frames: 4, num_real: 8, num_generated: 8, batch_size: 8}}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stand-in's broken videos are skipped with a warning on purpose
        code, _, err = flowzoo("run", "--objective", "alphaflow", "--data", str(root), "--out", str(out), *TINY_VIDEO,
                               "--set", fvd, capsys=capsys)
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result["data"] == "kinetics700" and result["results"]["meanflow@1"]["fvd"] > 0
    record = record_from_run(out, benchmark="kinetics700", method="alphaflow-sigmoid", command="flowzoo run ...")
    protocol = record["protocol"]["metrics"]["fvd"]
    assert protocol["extractor_weights_sha256"] == __import__("hashlib").sha256(weights.read_bytes()).hexdigest()


def test_without_the_i3d_file_the_run_stops_before_training_with_one_sentence(videos, tmp_path, capsys, monkeypatch):
    root, _ = videos
    monkeypatch.delenv("FLOWZOO_I3D", raising=False)
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, _, err = flowzoo("run", "--objective", "meanflow", "--data", str(root), "--out", str(out), *TINY_VIDEO,
                               capsys=capsys)
    assert code == 2 and "data.fvd.weights" in err and len(err.strip().splitlines()) == 1
    assert not (out / "checkpoints").exists()


def test_the_kinetics_suite_points_every_cell_at_the_users_videos_and_i3d(videos, tmp_path):
    root, weights = videos
    suite = with_overrides(get_suite("kinetics700"), data=str(root), sets=[f"data.fvd.weights={weights}"])
    for cell in suite.cells():
        cfg = cell.resolved_config(tmp_path)
        assert cfg["data"]["name"] == "kinetics700" and cfg["data"]["path"] == str(root)
        assert cfg["data"]["fvd"]["weights"] == str(weights) and cfg["backbone"]["name"] == "VideoDiT-S/4"
        assert Path(cell.run_dir(tmp_path)).name == f"{cell.method.name}-s0"  # the run folder is named, not the path
