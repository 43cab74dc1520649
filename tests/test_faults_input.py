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
