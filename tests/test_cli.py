"""`flowzoo run / sample / eval / list` end to end on tiny budgets, and clean errors for bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from flowzoo.cli import main

TINY = ["--set", "train.log_every=5", "--set", "train.checkpoint_every=10", "--set", "train.sample_every=10",
        "--set", "train.warmup_steps=2", "--set", "backbone.width=32", "--set", "backbone.depth=1", "--quiet"]


def flowzoo(*args: str, capsys=None) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    argv = sys.argv
    sys.argv = ["flowzoo", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    captured = capsys.readouterr() if capsys else None
    return code, captured.out if captured else "", captured.err if captured else ""


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    code, _, _ = flowzoo("run", "--objective", "alphaflow", "--schedule", "sigmoid", "--steps", "20",
                         "--batch-size", "32", "--out", str(out), "--set", "eval.num_samples=300", *TINY)
    assert code == 0
    return out


def test_run_writes_the_documented_run_directory(digits_run: Path):
    out = digits_run
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["objective"]["name"] == "alphaflow" and cfg["objective"]["alpha"]["name"] == "sigmoid"
    assert cfg["data"]["name"] == "digits" and cfg["train"]["steps"] == 20
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [5, 10, 15, 20]
    assert (out / "checkpoints" / "latest.pt").is_file()
    assert (out / "samples" / "meanflow-nfe1.png").is_file() and (out / "samples" / "meanflow-nfe2.png").is_file()
    assert sorted(p.name for p in (out / "samples").glob("step-*")) == [
        "step-00000010-nfe1.png", "step-00000010-nfe2.png", "step-00000020-nfe1.png", "step-00000020-nfe2.png"]
    result = json.loads((out / "result.json").read_text())
    assert set(result["results"]) == {"meanflow@1", "meanflow@2"}
    for row in result["results"].values():
        assert {"fd", "class_acc", "memorisation"} <= set(row)
    assert {"heldout/fd", "class_means/fd", "class_means/class_acc"} <= set(result["reference"])
    prov = result["provenance"]
    assert prov["steps"] == 20 and prov["images_seen"] == 640 and prov["seed"] == 0
    assert len(prov["config_hash"]) == 64 and prov["versions"]["torch"] == torch.__version__
    assert prov["wall_time_s"] > 0 and prov["device"].startswith("cpu")


def test_rerunning_the_same_command_resumes_instead_of_starting_over(digits_run: Path, capsys):
    before = (digits_run / "metrics.jsonl").read_text()
    ckpt_before = torch.load(digits_run / "checkpoints" / "latest.pt", weights_only=True)["step"]
    code, out, _ = flowzoo("run", "--objective", "alphaflow", "--schedule", "sigmoid", "--steps", "20",
                           "--batch-size", "32", "--out", str(digits_run), "--set", "eval.num_samples=300", *TINY, capsys=capsys)
    assert code == 0
    # Said in one line, not silently: the run is done and only its evaluation runs again.
    assert f"{digits_run} already finished training at step 20; re-evaluating its checkpoint" in out
    assert (digits_run / "metrics.jsonl").read_text() == before  # nothing retrained
    assert torch.load(digits_run / "checkpoints" / "latest.pt", weights_only=True)["step"] == ckpt_before == 20


def test_a_different_config_in_the_same_run_directory_is_refused(digits_run: Path, capsys):
    code, _, err = flowzoo("run", "--objective", "meanflow", "--steps", "20", "--out", str(digits_run), *TINY, capsys=capsys)
    assert code == 2 and "different config" in err and "Traceback" not in err


def test_sample_writes_a_png_and_an_npz(digits_run: Path, tmp_path: Path, capsys):
    stem = tmp_path / "grid"
    code, out, _ = flowzoo("sample", "--checkpoint", str(digits_run / "checkpoints" / "latest.pt"), "--nfe", "2",
                           "--num-samples", "20", "--out", str(stem), capsys=capsys)
    assert code == 0 and "wrote" in out
    data = np.load(stem.with_suffix(".npz"))
    assert data["samples"].shape == (20, 1, 8, 8) and data["labels"].shape == (20,)
    assert stem.with_suffix(".png").stat().st_size > 0


def test_eval_prints_a_table_and_writes_json(digits_run: Path, capsys):
    ckpt = digits_run / "checkpoints" / "latest.pt"
    code, out, _ = flowzoo("eval", "--checkpoint", str(ckpt), "--nfe", "1", capsys=capsys)
    assert code == 0 and "meanflow@1" in out
    record = json.loads(ckpt.with_suffix(".eval-seed0.json").read_text())
    assert record["step"] == 20 and "fd" in record["results"]["meanflow@1"]


def test_toy_run_scatters_against_the_data(tmp_path: Path):
    out = tmp_path / "toy"
    code, _, _ = flowzoo("run", "--objective", "meanflow", "--data", "toy:8gaussians", "--steps", "10",
                         "--batch-size", "64", "--out", str(out), "--set", "eval.num_samples=2000", *TINY)
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert {"swd", "mmd", "support_frac", "mode_coverage"} <= set(result["results"]["meanflow@1"])
    assert "real/swd" in result["reference"]
    assert (out / "samples" / "meanflow-nfe1.png").is_file()


def test_threads_option_pins_torch_threads_and_is_recorded(tmp_path: Path):
    before = torch.get_num_threads()
    out = tmp_path / "toy-threads"
    try:
        code, _, _ = flowzoo("run", "--objective", "flow_matching", "--data", "toy:moons", "--steps", "4",
                             "--batch-size", "32", "--out", str(out), "--threads", "1",
                             "--set", "eval.num_samples=200", *TINY)
        assert code == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    provenance = json.loads((out / "result.json").read_text())["provenance"]
    assert provenance["threads"] == 1 and "1 threads" in provenance["device"]


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["run", "--threads", "0"], "--threads must be at least 1"),
        (["run", "--set", "train.stepz=3"], "unknown key(s) train.stepz"),
        (["run", "--set", "train.steps=many"], "train.steps = 'many' has the wrong type"),
        (["run", "--objective", "meanflw"], "did you mean 'meanflow'"),
        (["run", "--data", "toy:moonz"], "unknown dataset"),
        (["run", "--backbone", "DiT-huge/2"], "unknown backbone"),
        (["run", "--schedule", "sigmod"], "unknown schedule"),
        (["run", "--config", "/nonexistent.yaml"], "does not exist"),
        (["run", "--set", "objective.fm_rato=0.5", "--steps", "1"], "unknown objective option"),
        (["sample", "--checkpoint", "/nonexistent.pt"], "does not exist"),
        (["list", "nothing"], "unknown kind"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_code_2(args, phrase, tmp_path, capsys):
    out_args = ["--out", str(tmp_path / "x")] if args[0] == "run" else []
    code, _, err = flowzoo(*args, *out_args, capsys=capsys)
    assert code == 2, err
    assert phrase in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_list_shows_builtins_and_where_they_come_from(capsys):
    code, out, _ = flowzoo("list", "objective", capsys=capsys)
    assert code == 0
    for name in ("alphaflow", "meanflow", "flow_matching", "shortcut", "consistency", "trajectory_fm"):
        assert name in out
    assert "flowzoo" in out


def test_usage_errors_and_no_arguments_exit_2_without_a_traceback(capsys):
    for args in ([], ["run", "--bogus"], ["bench", "perf", "--setting", "nonsense"]):
        code, out, err = flowzoo(*args, capsys=capsys)
        assert code == 2, args
        assert "Traceback" not in out + err
