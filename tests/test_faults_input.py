"""Fault suite, bad input: numbers written in YAML 1.2 style, and torn or corrupt files of every kind flowzoo reads."""

from __future__ import annotations

import pytest
import yaml

from flowzoo import yaml_io
from flowzoo.config import parse_set, resolve


@pytest.mark.parametrize("text", ["3e-4", "1e6", "5e-3", "-3E+2", "+1e+6", "1.5e-3", ".5", "2.", "1_000.5"])
def test_faults_yaml_reads_every_float_spelling_as_a_float(text):
    value = yaml_io.load(text)
    assert isinstance(value, float) and value == float(text.replace("_", ""))  # Python's own float parser


@pytest.mark.parametrize("text, expected", [("1", 1), ("0x1f", 31), ("true", True), ("no", False), ("null", None),
                                            ("abc", "abc"), ("1e", "1e"), ("e5", "e5"), ("1.2.3", "1.2.3")])
def test_faults_yaml_keeps_ints_bools_and_strings(text, expected):
    value = yaml_io.load(text)
    assert value == expected and type(value) is type(expected)


def test_faults_yaml_dump_quotes_strings_that_look_like_floats():
    data = {"tag": "1e6", "lr": 3e-4, "name": "x"}
    assert yaml_io.load(yaml_io.dump(data)) == data
    assert yaml.safe_load("lr: 3e-4")["lr"] == "3e-4"  # the YAML 1.1 behaviour this module exists to fix


def test_faults_set_and_config_files_read_exponent_numbers(tmp_path):
    assert parse_set(["train.lr=3e-4"]) == {"train": {"lr": float("3e-4")}}
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("train:\n  lr: 1e-3\n  steps: 20\n")
    cfg = resolve(objective="flow_matching", data="toy:moons", config_file=str(experiment), sets=["train.eps=1e-8"])
    assert cfg["train"]["lr"] == float("1e-3") and cfg["train"]["eps"] == float("1e-8") and cfg["train"]["steps"] == 20


# --- torn or corrupt files, full disk: in-process CLI calls on copies of one finished toy run ---------------

import json  # noqa: E402
import shutil  # noqa: E402

import numpy as np  # noqa: E402

from faults_helpers import (arm, assert_kept, assert_one_sentence, checkpoint_step, checksums, final_numbers,  # noqa: E402
                           finished, run_copy, toy_args)  # noqa: F401  (fixtures)
from test_cli import flowzoo  # noqa: E402



@pytest.mark.parametrize("damage", ["random-bytes", "truncated"])
def test_faults_corrupt_latest_checkpoint(run_copy, finished, damage, capsys):
    latest = run_copy / "checkpoints" / "latest.pt"
    bad = np.random.default_rng(0).bytes(4096) if damage == "random-bytes" else latest.read_bytes()[:3000]
    latest.write_bytes(bad)
    kept = checksums(run_copy / "checkpoints")
    for command in ("sample", "eval"):
        code, _, err = flowzoo(command, "--checkpoint", str(latest), capsys=capsys)
        assert code == 2
        assert_one_sentence(err, "cannot read checkpoint")
    assert_kept(kept, run_copy / "checkpoints")

    # Resume falls back to step-00000008.pt, says so in one line, and keeps the torn file under a new name.
    code, _, err = flowzoo(*toy_args(run_copy), capsys=capsys)
    assert code == 0 and "Traceback" not in err
    assert [line for line in err.splitlines() if "could not be read" in line][0].endswith(
        f"resuming from {run_copy / 'checkpoints' / 'step-00000008.pt'} (step 8).")
    aside = list((run_copy / "checkpoints").glob("latest.pt.corrupt-*"))
    assert [p.read_bytes() for p in aside] == [bad]
    assert checkpoint_step(latest) == 8 and final_numbers(run_copy) == finished[1]


@pytest.mark.parametrize("text, phrase", [("objective: [unclosed\n", "is not valid YAML"),
                                          ("objective: {name: flow_matching}\n", "lacks data, backbone, seed")])
def test_faults_torn_config_yaml(run_copy, text, phrase, capsys):
    (run_copy / "config.yaml").write_text(text)
    kept = checksums(run_copy)
    code, _, err = flowzoo("sample", "--checkpoint", str(run_copy / "checkpoints" / "latest.pt"), capsys=capsys)
    assert code == 2
    assert_one_sentence(err, phrase)
    assert_kept(kept, run_copy)


def test_faults_torn_config_yaml_on_resume(run_copy, capsys):
    (run_copy / "config.yaml").write_text("objective: [unclosed\n")
    code, _, err = flowzoo(*toy_args(run_copy), capsys=capsys)
    assert code == 2
    assert_one_sentence(err, "is not valid YAML")


def test_faults_half_written_metrics_line_is_ignored(run_copy, finished, capsys):
    from flowzoo.jsonl import read_by_step

    metrics = run_copy / "metrics.jsonl"
    with open(metrics, "a") as handle:
        handle.write('{"step": 10, "lo')
    assert [line["step"] for line in read_by_step(metrics)] == [2, 4, 6, 8]
    code, _, err = flowzoo(*toy_args(run_copy), capsys=capsys)  # resumes at step 8: the torn line is dropped
    assert code == 0 and "Traceback" not in err
    assert final_numbers(run_copy) == finished[1]


def test_faults_full_disk_during_a_checkpoint_write(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    arm(monkeypatch, "*/step-00000004.pt:1:enospc")
    code, _, err = flowzoo(*toy_args(out), capsys=capsys)
    assert code == 1
    assert_one_sentence(err, "No space left on device", "run the same command again")
    assert checkpoint_step(out / "checkpoints" / "latest.pt") == 2 and not list((out / "checkpoints").glob(".*tmp*"))


def test_faults_full_disk_during_a_result_write(run_copy, monkeypatch, capsys):
    kept = checksums(run_copy)
    arm(monkeypatch, "*/result.json:1:enospc")
    code, _, err = flowzoo(*toy_args(run_copy), capsys=capsys)
    assert code == 1
    assert_one_sentence(err, "could not write", "result.json")
    # result.json and every checkpoint are the old ones (config.yaml is rewritten with this copy's out path)
    assert_kept({k: v for k, v in kept.items() if k not in ("metrics.jsonl", "config.yaml")}, run_copy)


def test_faults_torn_result_record_is_left_out_of_the_leaderboard(run_copy, tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "torn.json").write_text(json.dumps({"objective": "x"})[:9])
    code, _, err = flowzoo("leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "lb"), capsys=capsys)
    assert code == 0 and "Traceback" not in err and "torn.json" in err
    assert (results / "torn.json").read_text() == json.dumps({"objective": "x"})[:9]  # left as it was


@pytest.mark.parametrize("damage", ["manifest", "shard"])
def test_faults_corrupt_latent_cache(tmp_path, damage, capsys):
    from imagenet_standins import standin_cache

    cache = tmp_path / "latents"
    shutil.copytree(standin_cache()[0], cache)
    capsys.readouterr()  # building the stand-in cache may print a diffusers notice
    victim = cache / "manifest.json" if damage == "manifest" else sorted(cache.glob("*.latents.npy"))[0]
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])
    code, _, err = flowzoo("run", "--objective", "flow_matching", "--data", str(cache), "--steps", "1",
                           "--out", str(tmp_path / "run"), "--quiet", capsys=capsys)
    assert code == 2
    assert_one_sentence(err, str(victim))


def test_faults_two_builders_of_one_latent_cache(tmp_path):
    from flowzoo import run_lock
    from flowzoo.data.imagenet import prepare_latents

    with run_lock.hold(tmp_path / "latents", "latent cache"):  # a second open file description: a second builder
        with pytest.raises(run_lock.FolderBusy, match="latent cache .* is in use"):
            prepare_latents(tmp_path / "images", None, tmp_path / "latents")


@pytest.mark.parametrize("text", ["label,youtube_id,time_start,time_end,split\nabseiling,abc,0,1", "\x00\xff\xfe garbage"])
def test_faults_torn_kinetics_clip_list(tmp_path, text):
    from flowzoo.data.kinetics.annotations import read_annotations

    path = tmp_path / "train.csv"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError) as info:
        read_annotations(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
