"""Fault suite, run directories and records as hostile data: no code runs from a run directory, `sample`
never destroys earlier outputs, non-finite metrics never reach a result, and one bad record never takes
down `leaderboard build` nor puts raw HTML in README.md (issue 26, items 1 to 4)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from faults_helpers import arm, assert_kept, assert_one_sentence, checksums, run_subprocess, toy_args
from flowzoo import atomic
from flowzoo.leaderboard.build import build_leaderboard, md_code
from flowzoo.leaderboard.record import RecordError, validate_record
from flowzoo.registry import BACKBONES, RegistryError
from test_cli import flowzoo


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert flowzoo(*toy_args(out))[0] == 0
    return out


@pytest.fixture
def run_copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def latest(run: Path) -> str:
    return str(run / "checkpoints" / "latest.pt")


# --- 1. a run directory is data: its config.yaml never names code that runs ------------------------------

HUBCONF = "from pathlib import Path\nPath(__file__).with_name('MARKER').write_text('code ran')\ndef net(**kw):\n    raise SystemExit\n"


def poison(run: Path) -> Path:
    """Make the run's config.yaml name torch.hub:load on a hubconf.py in the run directory itself."""
    (run / "hubconf.py").write_text(HUBCONF)
    text = (run / "config.yaml").read_text().replace(
        "backbone:\n  name: mlp\n", f"backbone:\n  name: torch.hub:load\n  repo_or_dir: {run}\n  model: net\n  source: local\n")
    assert "torch.hub:load" in text
    (run / "config.yaml").write_text(text)
    return run / "MARKER"


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_faults_rundir_import_path_in_config_is_refused(run_copy, command, capsys):
    marker = poison(run_copy)
    kept = checksums(run_copy)
    code, _, err = flowzoo(command, "--checkpoint", latest(run_copy), "--num-samples", "8", capsys=capsys)
    assert code == 2
    assert_one_sentence(err, str(run_copy / "config.yaml"), "'torch.hub:load' is an import path")
    assert not marker.exists()
    assert_kept(kept, run_copy)


def test_faults_rundir_import_path_in_a_distillation_teacher_is_refused(run_copy, tmp_path, capsys):
    marker = poison(run_copy)
    code, _, err = flowzoo(*toy_args(tmp_path / "student"), "--set", f"objective.distill={latest(run_copy)}", capsys=capsys)
    assert code == 2
    assert_one_sentence(err, "'torch.hub:load' is an import path")
    assert not marker.exists()


def test_faults_rundir_objective_import_path_is_refused(run_copy, capsys):
    text = (run_copy / "config.yaml").read_text().replace("objective:\n  name: flow_matching\n", "objective:\n  name: os:system\n")
    (run_copy / "config.yaml").write_text(text)
    code, _, err = flowzoo("sample", "--checkpoint", latest(run_copy), "--num-samples", "8", capsys=capsys)
    assert code == 2
    assert_one_sentence(err, "objective 'os:system' is an import path")


def test_faults_rundir_import_paths_stay_allowed_where_the_user_types_them():
    from flowzoo.backbones import ResidualMLP

    assert BACKBONES.get("flowzoo.backbones.mlp:ResidualMLP") is ResidualMLP  # a name the user typed
    with pytest.raises(RegistryError, match="is an import path"):
        BACKBONES.get("flowzoo.backbones.mlp:ResidualMLP", trusted=False)  # the same name read from a run directory
    assert BACKBONES.get("mlp", trusted=False) is BACKBONES.get("mlp")


# --- 2. `sample` writes atomically, beside the checkpoint, to the stem it was given -----------------------

def test_faults_sample_goes_beside_the_checkpoint_not_to_the_config_out(finished, run_copy, capsys):
    original = checksums(finished)
    code, out, err = flowzoo("sample", "--checkpoint", latest(run_copy), "--num-samples", "8", capsys=capsys)
    assert code == 0 and "Traceback" not in err
    written = sorted(p.name for p in (run_copy / "samples").glob("*-step*"))
    assert written == ["euler-nfe1-step8-seed0.npz", "euler-nfe1-step8-seed0.png"], written
    assert checksums(finished) == original  # the folder config.yaml names (where the run was trained) is untouched


def test_faults_sample_out_is_a_stem_taken_as_given(finished, tmp_path, capsys):
    for stem in ("model.v1", "model.v2"):
        code, _, err = flowzoo("sample", "--checkpoint", latest(finished), "--num-samples", "8", "--out",
                               str(tmp_path / stem), capsys=capsys)
        assert code == 0 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.v1.npz", "model.v1.png", "model.v2.npz", "model.v2.png"]


@pytest.mark.parametrize("victim", ["npz", "png"])
def test_faults_sample_full_disk_keeps_the_previous_samples(finished, tmp_path, monkeypatch, victim, capsys):
    stem = tmp_path / "model.v1"
    assert flowzoo("sample", "--checkpoint", latest(finished), "--num-samples", "8", "--out", str(stem), capsys=capsys)[0] == 0
    (tmp_path / "model.v1.png").write_bytes(b"previous png")  # marks: the old files, byte for byte
    (tmp_path / "model.v1.npz").write_bytes(b"previous npz")
    before = checksums(tmp_path)
    arm(monkeypatch, f"*/model.v1.{victim}:1:enospc")
    code, _, err = flowzoo("sample", "--checkpoint", latest(finished), "--num-samples", "8", "--out", str(stem), capsys=capsys)
    assert code == 1
    assert_one_sentence(err, f"could not write {tmp_path / f'model.v1.{victim}'}", "No space left on device",
                        "the file there before (if any) is unchanged")
    assert (tmp_path / f"model.v1.{victim}").read_bytes() == f"previous {victim}".encode()
    if victim == "npz":  # the first write failed: nothing else was touched
        assert_kept(before, tmp_path)
    assert not [p for p in tmp_path.iterdir() if atomic.is_temp(p)]


def test_faults_sample_killed_mid_write_keeps_the_old_file_and_its_temp_is_cleared_next_time(finished, tmp_path, capsys):
    stem = tmp_path / "s"
    (tmp_path / "s.png").write_bytes(b"previous png")
    args = ["sample", "--checkpoint", latest(finished), "--num-samples", "8", "--threads", "1", "--out", str(stem)]
    proc = run_subprocess(args, fault="*/s.png:1:kill")
    proc.communicate(timeout=120)
    assert proc.returncode == -9
    assert (tmp_path / "s.png").read_bytes() == b"previous png"
    leftovers = [p.name for p in tmp_path.iterdir() if atomic.is_temp(p)]
    assert leftovers == [f".s.png.tmp-{proc.pid}"]
    (tmp_path / f".notes.txt.tmp-{proc.pid}").write_bytes(b"not flowzoo's")  # a temp file of some other program
    assert flowzoo(*args, capsys=capsys)[0] == 0  # the next sample clears its own leftovers, nothing else
    assert not (tmp_path / leftovers[0]).exists() and (tmp_path / f".notes.txt.tmp-{proc.pid}").exists()
    assert (tmp_path / "s.png").read_bytes() != b"previous png"


def test_faults_leaderboard_build_clears_temp_files_of_a_killed_build(finished, tmp_path):
    from flowzoo.leaderboard.from_run import record_from_run
    from flowzoo.leaderboard.record import write_record

    write_record(tmp_path / "results" / "a.json", record_from_run(finished, benchmark="unit", method="fm", command="x"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    plots = tmp_path / "lb" / "plots"
    plots.mkdir(parents=True)
    stale = [plots / f".unit-x.png.tmp-{dead.pid}", tmp_path / "lb" / f".README.md.tmp-{dead.pid}"]
    alive = plots / f".other.png.tmp-{os.getppid()}"  # a writer that still runs: its temp file is its own
    foreign = tmp_path / "lb" / f".notes.txt.tmp-{dead.pid}"  # --out may be a folder with the user's files
    for path in [*stale, alive, foreign]:
        path.write_bytes(b"half")
    build_leaderboard(tmp_path / "results", tmp_path / "lb")
    assert not any(p.exists() for p in stale) and alive.exists() and foreign.exists()


# --- 3. non-finite metrics are not results ------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_record(finished):
    from flowzoo.leaderboard.from_run import record_from_run

    return record_from_run(finished, benchmark="unit", method="fm", command="flowzoo run ...")


def variant(record: dict, **fields) -> dict:
    """The record with other fields, as if run from a clean checkout (dirty records are left out anyway)."""
    new = copy.deepcopy(record)
    new["code"] = {"commit": "c0ffee" + "0" * 34, "dirty": False}
    new.update(fields)
    return new


def write_raw(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))  # as a hostile or buggy writer would: no schema check


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


@pytest.mark.parametrize("where, value", [("metric", float("nan")), ("metric", float("inf")), ("reference", float("nan")),
                                          ("reference", float("-inf"))])
def test_faults_nonfinite_record_is_left_out_never_best(good_record, tmp_path, where, value, capsys):
    bad = variant(good_record, method="diverged", seed=1)
    if where == "metric":
        for ev in bad["evaluations"]:
            ev["metrics"]["swd"] = value
    else:
        bad["reference"] = {**bad["reference"], "real/swd": value}
    with pytest.raises(RecordError, match="not finite"):
        validate_record(bad)
    results = tmp_path / "results"
    write_raw(results / "bad.json", bad)
    write_raw(results / "good.json", variant(good_record, seed=0))
    code, out, err = flowzoo("leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "lb"), capsys=capsys)
    assert code == 0 and "Traceback" not in err and "1 records (1 invalid" in out
    assert "bad.json" in err and "not finite" in err
    readme = (tmp_path / "lb" / "README.md").read_text()
    left_out = readme.split("## Records left out", 1)[1]
    assert "bad.json" in left_out and "not finite" in left_out
    tables = "\n".join(table_lines(readme))
    assert "diverged" not in tables and not re.search(r"\b(nan|inf)\b", tables, re.IGNORECASE)  # never [0, nan]


def test_faults_nonfinite_run_exits_nonzero_and_writes_no_result(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = flowzoo(*toy_args(out), "--set", "train.lr=.inf", capsys=capsys)
    assert code != 0
    assert_one_sentence(err, "finite")
    assert not (out / "result.json").exists()


def test_faults_nonfinite_metrics_at_evaluation_keep_the_run(run_copy, monkeypatch, capsys):
    from flowzoo.pipeline import run as run_module

    real = run_module.evaluate

    def diverged(*args, **kwargs):
        evaluation = real(*args, **kwargs)
        for row in evaluation["results"].values():
            row["swd"] = float("inf")
        return evaluation

    monkeypatch.setattr(run_module, "evaluate", diverged)
    kept = checksums(run_copy)
    code, _, err = flowzoo(*toy_args(run_copy), capsys=capsys)  # training is done: only the evaluation runs
    assert code == 1
    assert_one_sentence(err, f"the final metrics of {run_copy} are not finite", "swd = inf", "no result.json was written")
    assert_kept({k: v for k, v in kept.items() if k != "config.yaml"}, run_copy)  # the earlier result.json too


# --- 4. one bad record is reported and left out; README.md escapes record text ------------------------------

@pytest.mark.parametrize("field, value, reason", [("benchmark", "b" * 300, "300 characters long"),
                                                  ("benchmark", "toy\x00", "control character '\\x00'"),
                                                  ("method", "fm\x1b[31m", "control character '\\x1b'"),
                                                  ("data", "toy:moons\n## injected", "control character '\\n'")])
def test_faults_record_with_a_bad_name_is_left_out_not_fatal(good_record, tmp_path, field, value, reason, capsys):
    results = tmp_path / "results"
    write_raw(results / "bad.json", variant(good_record, **{field: value}))
    write_raw(results / "good.json", variant(good_record))
    code, out, err = flowzoo("leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "lb"), capsys=capsys)
    assert code == 0 and "Traceback" not in err and "1 records (1 invalid" in out
    assert "bad.json" in err and reason in err
    readme = (tmp_path / "lb" / "README.md").read_text()
    assert reason in readme.split("## Records left out", 1)[1] and "\x00" not in readme and "\x1b" not in readme
    assert "## injected" not in readme


def test_faults_long_but_valid_names_get_short_plot_file_names(good_record, tmp_path):
    long_name = "a benchmark/with spaces:and (parentheses) " + "x" * 70
    results = tmp_path / "results"
    write_raw(results / "a.json", variant(good_record, benchmark=long_name))
    loaded, written = build_leaderboard(results, tmp_path / "lb")
    assert len(loaded.records) == 1
    plots = [p.name for p in written if p.parent.name == "plots"]
    assert plots and all(len(name) < 100 and " " not in name and "(" not in name for name in plots)


def test_faults_readme_escapes_html_from_records(good_record, tmp_path):
    results = tmp_path / "results"
    script = "<script>alert(1)</script>"
    write_raw(results / "a.json", variant(good_record, method=f"fm{script}", command=f"flowzoo run `{script}`"))
    build_leaderboard(results, tmp_path / "lb")
    readme = (tmp_path / "lb" / "README.md").read_text()
    page = (tmp_path / "lb" / "index.html").read_text()
    assert "fm&lt;script&gt;alert(1)&lt;/script&gt;" in readme
    command = md_code(f"flowzoo run `{script}`")
    assert command in readme  # verbatim in a code span, where Markdown renders no HTML
    assert "<script" not in readme.replace(command, "") and "<script>alert" not in page
    assert page.count("<script") == 1  # the page's own inline script (column sorting) only


def test_faults_eval_of_a_checkpoint_whose_metrics_are_not_finite_writes_nothing(run_copy, capsys):
    """flowzoo eval on a checkpoint whose EMA weights are NaN: exit 1, one sentence, no .eval-seedK.json."""
    ckpt = sorted((run_copy / "checkpoints").glob("*.pt"))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert isinstance(state.get("ema"), list) and state["ema"], f"checkpoint layout changed: {sorted(state)}"
    for tensor in state["ema"][0]["net"].values():  # the EMA that eval samples from by default (--ema 0)
        if torch.is_tensor(tensor) and tensor.is_floating_point():
            tensor.fill_(float("nan"))
    torch.save(state, ckpt)
    code, _, err = flowzoo("eval", "--checkpoint", str(ckpt), "--nfe", "1", "--num-samples", "64", "--threads", "1",
                           capsys=capsys)
    assert code == 1
    assert_one_sentence(err, f"the metrics of {ckpt} are not finite", "was not written")
    assert not list((run_copy / "checkpoints").glob("*.eval-seed*.json"))
