"""Fault suite, issue 26 (part B): stuck or lost work, and inputs that used to end in a traceback or in a
sentence naming nothing. Each case: the exit code, one sentence naming the key or path, no traceback, and
no user file lost."""

from __future__ import annotations

import re

import errno
import json
import os
import resource
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from faults_helpers import (assert_kept, assert_one_sentence, checkpoint_step, checksums, final_numbers,  # noqa: F401
                            finished, run_copy, run_subprocess, toy_args)  # finished, run_copy: fixtures
from flowzoo import fault_hook, run_lock, yaml_io
from flowzoo.config import ConfigError
from test_cli import flowzoo



# --- item 4: one bad suite file costs only its own suite -------------------------------------------------

@pytest.fixture
def suites_dir(tmp_path, monkeypatch):
    """benchmarks/suites/ stand-in: one good suite and three bad files, registered into a restored BENCHMARKS."""
    from flowzoo.bench import suites
    from flowzoo.registry import BENCHMARKS

    folder = tmp_path / "suites"
    folder.mkdir()
    (folder / "good.yaml").write_text(yaml_io.dump({
        "description": "a fine suite", "data": "toy:moons", "seeds": [0],
        "methods": [{"name": "fm", "objective": "flow_matching"}]}))
    (folder / "zz.yaml").write_bytes(np.random.default_rng(0).bytes(512))
    (folder / "yy.yaml").mkdir()
    (folder / "xx.yaml").write_text("data: toy:moons\nseeds: [0]\nmethods: [{name: a/b, objective: flow_matching}]\n")
    BENCHMARKS.names()  # plugins and built-ins first, then a copy the test may change
    monkeypatch.setattr(BENCHMARKS, "_entries", dict(BENCHMARKS._entries))
    monkeypatch.setattr(suites, "SKIPPED", {})
    return folder


def test_faults_bad_suite_files_are_skipped_with_a_warning_naming_each(suites_dir, capsys):
    from flowzoo.bench.suites import register_suite_files
    from flowzoo.registry import BENCHMARKS

    kept = checksums(suites_dir)
    with pytest.warns(UserWarning) as caught:
        skipped = register_suite_files(suites_dir)
    assert sorted(skipped) == ["xx", "yy", "zz"] and "good" in BENCHMARKS.names()
    messages = [str(w.message) for w in caught]
    for name, phrase in (("zz", "not valid YAML"), ("yy", "is a folder"), ("xx", "'a/b'")):
        assert any(str(suites_dir / f"{name}.yaml") in m and phrase in m and "skipped" in m for m in messages), messages
    # Every other command works: list, the good suite, and the bad one says why in one sentence.
    code, out, err = flowzoo("list", "benchmark", capsys=capsys)
    assert code == 0 and "good" in out and "Traceback" not in err
    code, out, err = flowzoo("bench", "good", "--dry-run", "--runs", str(suites_dir.parent / "runs"),
                             "--results", str(suites_dir.parent / "results"), capsys=capsys)
    assert code == 0 and "flowzoo run" in out
    for name in ("zz", "yy", "xx"):
        code, _, err = flowzoo("bench", name, capsys=capsys)
        assert code == 2
        assert_one_sentence(err, str(suites_dir / f"{name}.yaml"), "skipped")
    assert_kept(kept, suites_dir)


def test_faults_suite_method_name_with_a_slash_is_one_sentence():
    from flowzoo.bench.suite import suite_from_dict

    spec = {"data": "toy:moons", "seeds": [0], "methods": [{"name": "fm/v2", "objective": "flow_matching"}]}
    with pytest.raises(ConfigError, match=r"methods\[0\] name 'fm/v2' must be letters") as info:
        suite_from_dict("s", spec, where="suite file s.yaml")
    assert "s.yaml" in str(info.value) and "\n" not in str(info.value)


# --- item 5: stuck or lost work ------------------------------------------------------------------------------

def test_faults_bench_jobs_zero_is_refused_not_a_hang(tmp_path, capsys):
    from flowzoo.bench.runner import run_grid
    from flowzoo.bench.suite import get_suite

    code, _, err = flowzoo("bench", "toy", "--jobs", "0", "--runs", str(tmp_path / "runs"),
                           "--results", str(tmp_path / "results"), capsys=capsys)
    assert code == 2
    assert_one_sentence(err, "--jobs must be at least 1")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        run_grid(get_suite("toy"), runs_root=tmp_path / "runs", results_root=tmp_path / "results", jobs=0)


class Killed(BaseException):
    """A kill at a chosen line (in-process, so the test can look at what a SIGKILL there would leave)."""


def test_faults_digits_classifier_pair_survives_a_kill_at_every_step(tmp_path, monkeypatch):
    from flowzoo.eval import classifier as pair  # the trainer and pair writer digits and Fashion-MNIST share
    from flowzoo.eval import digits_classifier as dc

    path = tmp_path / "assets" / "cls.safetensors"
    old_record = dc.train_digits_classifier(path, epochs=1)
    assert oct(path.stat().st_mode & 0o777) == oct(path.with_suffix(".json").stat().st_mode & 0o777) == "0o644"
    old = checksums(path.parent)

    # Killed while the record is written (before its rename): the old pair, untouched.
    proc = run_subprocess(["prepare", "digits-classifier", "--out", str(path), "--epochs", "1", "--seed", "1"],
                          fault="*/cls.json:1:kill")
    proc.communicate(timeout=120)
    assert proc.returncode == -9
    assert_kept(old, path.parent)
    dc.load_digits_classifier.cache_clear()
    dc.load_digits_classifier(path)

    # Killed after the record's rename, before the weights': the new record and the staged weights it names,
    # which loading completes; the modes stay 0644 whatever the umask.
    def kill(staged, final):
        raise Killed
    monkeypatch.setattr(pair, "_complete", kill)
    umask = os.umask(0o077)
    try:
        with pytest.raises(Killed):
            dc.train_digits_classifier(path, epochs=1, seed=2)
    finally:
        os.umask(umask)
    monkeypatch.undo()
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["seed"] == 2 and record["sha256"] != old_record["sha256"]
    dc.load_digits_classifier.cache_clear()
    dc.load_digits_classifier(path)
    assert pair.sha256_file(path) == record["sha256"] and not pair.staged_path(path).exists()
    assert {oct(p.stat().st_mode & 0o777) for p in path.parent.iterdir()} == {"0o644"}


def test_faults_a_run_that_failed_before_step_1_does_not_claim_its_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = flowzoo(*toy_args(out), "--set", "train.lr=.nan", capsys=capsys)
    assert code == 2
    assert_one_sentence(err, "Invalid learning rate")
    assert (out / "config.yaml").is_file()
    code, _, err = flowzoo(*toy_args(out), capsys=capsys)  # the corrected command, same folder
    assert code == 0 and "Traceback" not in err and checkpoint_step(out / "checkpoints" / "latest.pt") == 8
    # A folder that did train is still refused to another config.
    code, _, err = flowzoo(*toy_args(out), "--set", "train.lr=5e-4", capsys=capsys)
    assert code == 2
    assert_one_sentence(err, "holds a run with a different config")


def test_faults_batch_beyond_the_memory_cap_is_one_sentence_and_leaves_the_folder_free(tmp_path, capsys):
    out = tmp_path / "run"
    cap = 4 << 30  # address space: torch loads, a batch of 10^9 2-D points does not fit

    proc = run_subprocess([*toy_args(out), "--batch-size", str(10**9)],
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert_one_sentence(err, "out of memory at train.batch_size=1000000000", "lower --batch-size")
    assert flowzoo(*toy_args(out), capsys=capsys)[0] == 0  # the folder holds no run: the fixed command takes it


PLUGIN = "import sys\nsys.exit(0)\n"


def test_faults_a_plugin_calling_sys_exit_on_import_is_named(tmp_path, monkeypatch, capsys):
    from flowzoo.registry import ALL_REGISTRIES, METRICS, load_builtins

    site = tmp_path / "site"
    info = site / "flowzoo_exiting_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "flowzoo_exiting_plugin.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flowzoo-exiting-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[flowzoo.metrics]\nexiting = flowzoo_exiting_plugin:metric\n")
    monkeypatch.syspath_prepend(str(site))
    load_builtins()
    for registry in ALL_REGISTRIES.values():
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    monkeypatch.setattr(METRICS, "_plugins_loaded", False)
    code, _, err = flowzoo(*toy_args(tmp_path / "run"), capsys=capsys)
    assert code == 2
    assert_one_sentence(err, "metric plugin 'exiting'", "flowzoo-exiting-plugin", "sys.exit(0)")


def test_faults_a_stray_rank_variable_still_takes_the_run_lock(tmp_path, monkeypatch, capsys):
    for env, main in (({}, True), ({"RANK": "3"}, True), ({"RANK": "3", "WORLD_SIZE": "1"}, True),
                      ({"RANK": "3", "WORLD_SIZE": "4"}, False), ({"RANK": "0", "WORLD_SIZE": "4"}, True)):
        for var in ("RANK", "WORLD_SIZE"):
            monkeypatch.delenv(var, raising=False)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        assert run_lock.is_main_process() is main, env
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("WORLD_SIZE")
    out = tmp_path / "run"
    with run_lock.hold(out):  # another run holds the folder: this one must see it, not write beside it
        code, _, err = flowzoo(*toy_args(out), capsys=capsys)
    assert code == 2
    assert_one_sentence(err, "is in use by process")
    assert not (out / "config.yaml").exists()


# --- item 6: every bad input is one sentence naming the file or key --------------------------------------------

def test_faults_a_loadable_pt_that_is_not_flowzoos(run_copy, finished, capsys):
    foreign = run_copy / "checkpoints" / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    kept = checksums(run_copy)
    for command in ("sample", "eval"):
        code, _, err = flowzoo(command, "--checkpoint", str(foreign), capsys=capsys)
        assert code == 2
        assert_one_sentence(err, str(foreign), "not a flowzoo checkpoint")
    assert_kept(kept, run_copy)

    # As latest.pt it is set aside and the run resumes from the newest checkpoint of its own.
    shutil.copy(foreign, run_copy / "checkpoints" / "latest.pt")
    code, _, err = flowzoo(*toy_args(run_copy), capsys=capsys)
    assert code == 0 and "Traceback" not in err and "resuming from" in err
    assert checkpoint_step(run_copy / "checkpoints" / "latest.pt") == 8 and final_numbers(run_copy) == finished[1]


def test_faults_a_checkpoint_of_another_backbone_size_on_resume(run_copy, finished, capsys):
    latest = run_copy / "checkpoints" / "latest.pt"
    ckpt = torch.load(latest, weights_only=True)
    ckpt["model"] = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) if v.dim() else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, latest)
    other = latest.read_bytes()
    code, _, err = flowzoo(*toy_args(run_copy), capsys=capsys)
    assert code == 0 and "Traceback" not in err
    line = [line for line in err.splitlines() if "could not be read" in line][0]
    assert str(latest) in line and line.endswith(f"resuming from {run_copy / 'checkpoints' / 'step-00000008.pt'} (step 8).")
    assert [p.read_bytes() for p in (run_copy / "checkpoints").glob("latest.pt.corrupt-*")] == [other]  # kept
    assert final_numbers(run_copy) == finished[1]


def test_faults_weights_of_another_backbone_size_are_one_sentence_naming_the_file(run_copy):
    from flowzoo.pipeline.sample import load_run
    from flowzoo.train.checkpoint import CheckpointError, load_weights

    path = run_copy / "checkpoints" / "latest.pt"
    net, _, _, ckpt = load_run(path)  # the network its config.yaml describes
    weights = ckpt["ema"][0]["net"]
    wider = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) if v.dim() else v for k, v in weights.items()}
    load_weights(net, weights, path)  # its own size loads
    with pytest.raises(CheckpointError, match="holds weights of another network \\(size mismatch for") as info:
        load_weights(net, wider, path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_faults_sample_and_eval_of_a_checkpoint_from_another_backbone_size(run_copy, capsys):
    config = run_copy / "config.yaml"
    text = config.read_text()
    config.write_text(re.sub(r"width: (\d+)", lambda m: f"width: {int(m.group(1)) * 2}", text, count=1))
    assert config.read_text() != text
    kept = checksums(run_copy)
    path = run_copy / "checkpoints" / "latest.pt"
    for command in ("sample", "eval"):
        code, _, err = flowzoo(command, "--checkpoint", str(path), capsys=capsys)
        assert code == 2
        assert_one_sentence(err, str(path), "holds weights of another network")
    assert_kept(kept, run_copy)


def test_faults_restore_refuses_weights_of_another_network_in_one_sentence(run_copy):
    from flowzoo.train import TrainOptions
    from flowzoo.train.checkpoint import CheckpointError, load_checkpoint
    from flowzoo.train.state import TrainState, restore

    path = run_copy / "checkpoints" / "latest.pt"
    ckpt = load_checkpoint(path)
    opts = TrainOptions(**{**ckpt["options"], "out_dir": str(run_copy)})
    net = torch.nn.Linear(3, 3)
    state = TrainState(opts, net, [], torch.optim.Adam(net.parameters()))
    with pytest.raises(CheckpointError, match="holds weights of another network") as info:
        restore(state, {**ckpt, "ema": []}, None, path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["file", "loop", "under-a-file", "under-a-loop"])
def test_faults_out_that_is_a_file_or_a_symlink_loop(tmp_path, kind, capsys):
    afile, loop = tmp_path / "afile", tmp_path / "loop"
    afile.write_text("mine\n")
    loop.symlink_to(loop)
    out = {"file": afile, "loop": loop, "under-a-file": afile / "run", "under-a-loop": loop / "run"}[kind]
    code, _, err = flowzoo(*toy_args(out), capsys=capsys)
    assert code == 2
    assert_one_sentence(err, f"--out {out}:", str(afile if "file" in kind else loop))
    assert afile.read_text() == "mine\n" and loop.is_symlink()


@pytest.mark.parametrize("kind", ["under-a-file", "under-a-loop"])
def test_faults_sample_out_under_a_file_or_a_symlink_loop(finished, tmp_path, kind, capsys):
    afile, loop = tmp_path / "afile", tmp_path / "loop"
    afile.write_text("mine\n")
    loop.symlink_to(loop)
    stem = (afile if kind == "under-a-file" else loop) / "samples"
    code, _, err = flowzoo("sample", "--checkpoint", str(finished[0] / "checkpoints" / "latest.pt"), "--num-samples", "8",
                           "--out", str(stem), capsys=capsys)
    assert code == 2
    assert_one_sentence(err, "cannot use", str(afile if kind == "under-a-file" else loop))
    assert afile.read_text() == "mine\n"


def test_faults_unreadable_metrics_lines_are_set_aside_and_the_run_resumes(run_copy, finished, capsys):
    from flowzoo.jsonl import read_by_step

    metrics = run_copy / "metrics.jsonl"
    for name in ("latest.pt", "step-00000006.pt", "step-00000008.pt"):  # resume from step 4
        (run_copy / "checkpoints" / name).unlink()
    lines = metrics.read_bytes().splitlines(keepends=True)
    damaged = b"".join(lines[:2] + [b'{"step": 1e999, "loss": 1.0}\n', b"\xff\xfe\x00\x9c binary\n"] + lines[2:])
    metrics.write_bytes(damaged)
    assert [line["step"] for line in read_by_step(metrics)] == [2, 4, 6, 8]
    code, _, err = flowzoo(*toy_args(run_copy), capsys=capsys)
    assert code == 0 and "Traceback" not in err
    note = [line for line in err.splitlines() if "unreadable" in line]
    assert len(note) == 1 and str(metrics) in note[0] and "line 3, 4" in note[0]
    assert [p.read_bytes() for p in run_copy.glob("metrics.jsonl.unreadable-*")] == [damaged]
    assert final_numbers(run_copy) == finished[1]


def test_faults_reported_yaml_that_is_a_list(tmp_path, capsys):
    reported = tmp_path / "reported.yaml"
    reported.write_text("- benchmark: toy\n- metric: swd\n")
    (tmp_path / "results").mkdir()
    code, _, err = flowzoo("leaderboard", "build", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "lb"),
                           "--reported", str(reported), capsys=capsys)
    assert code == 2
    assert_one_sentence(err, str(reported), "must hold a mapping of sections")


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_faults_num_samples_zero(finished, command, capsys):
    code, _, err = flowzoo(command, "--checkpoint", str(finished[0] / "checkpoints" / "latest.pt"), "--num-samples", "0",
                           capsys=capsys)
    assert code == 2
    assert_one_sentence(err, "--num-samples must be at least 1")


@pytest.mark.parametrize("spec", ["garbage", "*.pt:x:kill", "*.pt:0:kill", "*.pt:1:explode", ":1:kill"])
def test_faults_a_garbled_fault_variable_is_named(tmp_path, monkeypatch, spec, capsys):
    monkeypatch.setattr(fault_hook, "_seen", {})
    monkeypatch.setenv(fault_hook.ENV, spec)
    code, _, err = flowzoo(*toy_args(tmp_path / "run"), capsys=capsys)
    assert code == 2
    assert_one_sentence(err, f"FLOWZOO_FAULT={spec!r} is not")


@pytest.mark.parametrize("args", [["--set", "seed=abc"], ["--seed", str(2**70)], ["--set", "seed=1.5"],
                                  ["--seed", "-1"]])
def test_faults_a_seed_that_is_not_a_64_bit_seed(tmp_path, args, capsys):
    code, _, err = flowzoo(*toy_args(tmp_path / "run"), *args, capsys=capsys)
    assert code == 2
    assert_one_sentence(err, "seed must be a whole number from 0 to")
    assert not (tmp_path / "run").exists()


def test_faults_sample_seed_beyond_64_bits(finished, capsys):
    code, _, err = flowzoo("sample", "--checkpoint", str(finished[0] / "checkpoints" / "latest.pt"),
                           "--seed", str(2**70), capsys=capsys)
    assert code == 2
    assert_one_sentence(err, "--seed must be a whole number")


def test_faults_analyze_gradients_of_an_objective_without_r_below_t(tmp_path, capsys):
    out = tmp_path / "gradients"
    code, _, err = flowzoo("analyze", "gradients", "--objective", "flow_matching", "--data", "toy:moons", "--steps", "2",
                           "--every", "1", "--batch", "16", "--out", str(out), "--quiet", "--set", "backbone.width=16",
                           "--set", "backbone.depth=1", capsys=capsys)
    assert code == 2
    assert_one_sentence(err, "'flow_matching'", "r < t")
    assert not out.exists()


def test_faults_a_duplicated_yaml_key_names_the_key_and_the_file(tmp_path, capsys):
    with pytest.raises(Exception, match="duplicate key 'lr' \\(first on line 2, again on line 3\\)"):
        yaml_io.load("train:\n  lr: 1e-3\n  lr: 3e-4\n")
    assert yaml_io.load("base: &b {lr: 1}\ntrain:\n  <<: *b\n  lr: 2\n")["train"] == {"lr": 2}  # merges still override
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("train:\n  lr: 1e-3\n  lr: 3e-4\n")
    code, _, err = flowzoo(*toy_args(tmp_path / "run"), "--config", str(experiment), capsys=capsys)
    assert code == 2
    assert_one_sentence(err, str(experiment), "duplicate key 'lr'")


def test_faults_a_full_disk_on_a_metrics_line_names_the_file(tmp_path, monkeypatch, capsys):
    from flowzoo import jsonl

    out = tmp_path / "run"
    real = fault_hook.mid_write

    def full(path, handle, data=None):
        if Path(path).name in ("metrics.jsonl", "lines.jsonl"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() raises it: no file name
        return real(path, handle, data)
    monkeypatch.setattr(fault_hook, "mid_write", full)
    with pytest.raises(OSError) as info:
        jsonl.append_line(tmp_path / "lines.jsonl", {"step": 1})
    assert info.value.filename == str(tmp_path / "lines.jsonl")
    code, _, err = flowzoo(*toy_args(out), capsys=capsys)
    assert code == 1
    assert_one_sentence(err, f"could not write {out / 'metrics.jsonl'}", "No space left on device")
    assert "a file" not in err
