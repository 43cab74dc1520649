"""Config layering, strict validation, and the YAML files under configs/."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flowzoo.config import CONFIG_ROOT, ConfigError, build_dataclass, config_hash, parse_set, resolve
from flowzoo.objectives.schedules import build_schedule
from flowzoo.registry import BACKBONES, DATASETS, OBJECTIVES, SCHEDULES
from flowzoo.train import TrainOptions


@pytest.mark.parametrize("name", [n for n in OBJECTIVES.names() if OBJECTIVES.entry(n).source == "flowzoo"])
def test_objective_yaml_equals_the_preset_defaults_in_code(name):
    """Built-in presets only: a plugin (examples/flowzoo-splitmeanflow) brings its defaults in its own code."""
    path = CONFIG_ROOT / "objective" / f"{name}.yaml"
    assert path.is_file(), f"configs/objective/{name}.yaml is missing"
    spec = yaml.safe_load(path.read_text())["objective"]
    assert spec.pop("name") == name
    assert spec == OBJECTIVES.get(name).default_config.to_dict()


@pytest.mark.parametrize("path", sorted((CONFIG_ROOT / "schedule").glob("*.yaml")), ids=lambda p: p.stem)
def test_schedule_yamls_build(path):
    spec = yaml.safe_load(path.read_text())["alpha"]
    assert spec["name"] in SCHEDULES.names()
    sched = build_schedule(spec, total_steps=1000)
    assert 0.0 <= sched.value(0) <= 1.0


@pytest.mark.parametrize("path", sorted((CONFIG_ROOT / "backbone").glob("*.yaml")), ids=lambda p: p.stem)
def test_backbone_yamls_name_registered_backbones(path):
    assert yaml.safe_load(path.read_text())["backbone"]["name"] in BACKBONES.names()


@pytest.mark.parametrize("data", [n for n in DATASETS.names()])
def test_every_builtin_dataset_resolves_to_a_valid_run_config(data):
    cfg = resolve(data=data, objective="meanflow")
    assert cfg["data"]["name"] == data and cfg["backbone"]["name"] in BACKBONES.names()
    build_dataclass(TrainOptions, {**cfg["train"], "out_dir": "x"}, "train")


def test_layers_compose_in_order(tmp_path: Path):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("train: {steps: 7, lr: 0.5}\nobjective: {fm_ratio: 0.3}\n")
    cfg = resolve(objective="alphaflow", schedule="linear", config_file=str(experiment),
                  sets=["train.lr=0.25", "objective.target_clamp=null"], flags={"train.steps": 11, "seed": 3})
    assert cfg["objective"]["name"] == "alphaflow"
    assert cfg["objective"]["alpha"]["name"] == "linear"  # the schedule layer replaced the preset's sigmoid
    assert cfg["objective"]["fm_ratio"] == 0.3  # experiment over preset
    assert cfg["objective"]["target_clamp"] is None  # --set over preset
    assert cfg["train"]["lr"] == 0.25  # --set over experiment
    assert cfg["train"]["steps"] == 11  # flag over everything
    assert cfg["seed"] == 3


def test_parse_set_reads_yaml_values():
    assert parse_set(["a.b=1", "a.c=[1, 2]", "d={name: x, k: 0.5}", "e=hello"]) == {
        "a": {"b": 1, "c": [1, 2]}, "d": {"name": "x", "k": 0.5}, "e": "hello"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_set(["nonsense"])


def test_unknown_key_and_wrong_type_are_one_sentence():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) train.stepz; valid: .*steps"):
        build_dataclass(TrainOptions, {"stepz": 3}, "train")
    with pytest.raises(ConfigError, match="train.steps = 'many' has the wrong type; expected int"):
        build_dataclass(TrainOptions, {"steps": "many"}, "train")
    with pytest.raises(ConfigError, match="unknown config section"):
        resolve(sets=["trian.steps=3"])


def test_config_hash_ignores_the_output_folder_only():
    cfg = resolve(objective="meanflow")
    assert config_hash({**cfg, "out": "a"}) == config_hash({**cfg, "out": "b"})
    assert config_hash(cfg) != config_hash({**cfg, "seed": cfg["seed"] + 1})


def test_data_overrides_apply_to_their_preset_only():
    alphaflow = resolve(objective="alphaflow", data="digits")
    assert alphaflow["objective"]["time_sampler"] == "uniform"
    assert alphaflow["objective"]["weighting"]["name"] == "inverse_alpha_adaptive"
    consistency = resolve(objective="consistency", data="digits")
    assert consistency["objective"]["time_sampler"]["name"] == "consistency"  # CT keeps r = 0
    toy = resolve(objective="alphaflow", data="toy:moons")
    assert toy["objective"]["weighting"]["name"] == "alpha_adaptive"
