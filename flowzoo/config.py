"""Run configs: YAML layers from configs/ plus command-line overrides, resolved into one mapping.

Layers, later ones win (deep merge):
  1. configs/data/<data>.yaml        the dataset and the budget that suits it (backbone, steps, eval)
  2. configs/objective/<name>.yaml   the preset (its published defaults; no file: the preset's own),
                                     then the data file's `objective_overrides: {preset: {...}}` for
                                     this preset (e.g. uniform time pairs on digits), which no preset
                                     knows about
  3. configs/schedule/<name>.yaml    an alpha schedule, written into objective.alpha
  4. --config FILE.yaml              an experiment (or, from Python, a mapping: flowzoo.run(config))
  5. --set key.sub=value             single values (parsed as YAML: 0.5, [1, 2], {name: x})
  6. --steps, --batch-size, ...      the explicit flags
(`--data DIR` naming a latent cache folder means data {name: imagenet256, path: DIR}.)

The resolved mapping is validated strictly: an unknown key, a wrong type or an unknown registry
name is a ``ConfigError`` with one sentence naming it and the valid choices.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from flowzoo import yaml_io

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"
SECTIONS = ("objective", "backbone", "data", "train", "eval", "seed", "out")


class ConfigError(ValueError):
    """A config a user wrote is wrong; the message is one sentence saying what to do."""


def config_dir() -> Path:
    if not CONFIG_ROOT.is_dir():
        raise ConfigError(f"the configs/ folder was not found at {CONFIG_ROOT}; install flowzoo from its repository (pip install -e .).")
    return CONFIG_ROOT


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist.")
    try:
        data = yaml_io.load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML ({str(exc).splitlines()[0]}).") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not valid YAML (not UTF-8 text).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level.")
    return data


def layer(kind: str, name: str) -> dict[str, Any]:
    """configs/<kind>/<name>.yaml ('/' and ':' in names become '-', e.g. toy:moons -> toy-moons.yaml),
    else the file of the name's family (toy:moons -> toy.yaml), else nothing."""
    folder = config_dir() / kind
    for stem in (name.replace("/", "-").replace(":", "-"), name.split(":")[0]):
        path = folder / f"{stem}.yaml"
        if path.is_file():
            return load_yaml(path)
    return {}


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        current = out.get(key)
        same_part = isinstance(current, dict) and isinstance(value, dict) and value.get("name", current.get("name")) == current.get("name")
        if same_part:
            out[key] = deep_merge(current, value)
        else:  # a new name replaces the whole part: arguments of one schedule mean nothing to another
            out[key] = copy.deepcopy(value)
    return out


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """['train.steps=100', 'objective.alpha={name: sigmoid}'] -> nested mapping."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (e.g. train.steps=100), got '{item}'.")
        try:
            value = yaml_io.load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: the value '{raw}' is not valid YAML.") from None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{part}' is set to a value and to sub-keys at once.")
        node[parts[-1]] = value
    return out


def as_part(spec: Any) -> dict[str, Any]:
    """A part given as a bare name becomes {name: ...}."""
    if isinstance(spec, str):
        return {"name": spec}
    if isinstance(spec, dict):
        return dict(spec)
    raise ConfigError(f"expected a name or a mapping with a 'name', got {spec!r}.")


def resolve(
    *,
    objective: str | None = None,
    schedule: str | None = None,
    backbone: str | None = None,
    data: str | None = None,
    config_file: str | None = None,
    sets: list[str] | None = None,
    flags: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compose the layers above into one run config (not yet validated against the registries).

    ``config`` is an experiment given as a mapping (layer 4, merged over ``config_file``'s)."""
    experiment = load_yaml(config_file) if config_file else {}
    if config is not None:
        if not isinstance(config, dict):
            raise ConfigError(f"a config is a mapping of sections ({', '.join(SECTIONS)}), not {type(config).__name__}.")
        experiment = deep_merge(experiment, {k: as_part(v) if k in ("objective", "backbone", "data") else v
                                             for k, v in config.items()})
    overrides = parse_set(sets or [])

    def pick(section: str, cli_value: str | None, default: str) -> str:
        for source in (cli_value, _name(overrides.get(section)), _name(experiment.get(section))):
            if source:
                return source
        return default

    data_name, data_path = latent_cache_data(pick("data", data, "digits"))
    objective_name = pick("objective", objective, "alphaflow")

    data_layer = layer("data", data_name)
    data_objective = (data_layer.pop("objective_overrides", None) or {}).get(objective_name, {})
    if "name" in data_objective:
        raise ConfigError(f"configs/data for {data_name} may tune an objective's settings but not rename it.")
    cfg: dict[str, Any] = {"seed": 0}
    cfg = deep_merge(cfg, data_layer)
    cfg = deep_merge(cfg, {"data": {"name": data_name, **({"path": data_path} if data_path else {})}})
    cfg = deep_merge(cfg, {"objective": {"name": objective_name}})
    cfg = deep_merge(cfg, layer("objective", objective_name))
    cfg = deep_merge(cfg, {"objective": data_objective})
    if schedule:
        sched = layer("schedule", schedule) or {"alpha": {"name": schedule}}
        cfg = deep_merge(cfg, {"objective": {"alpha": sched["alpha"]}})
    cfg = deep_merge(cfg, experiment)
    cfg = deep_merge(cfg, overrides)
    if backbone:
        cfg = deep_merge(cfg, {"backbone": {"name": backbone}})
    for key, value in (flags or {}).items():
        if value is not None:
            section, _, field = key.partition(".")
            cfg = deep_merge(cfg, {section: {field: value}} if field else {section: value})
    for section in ("objective", "backbone", "data"):
        if section in cfg:
            cfg[section] = as_part(cfg[section])
    unknown = sorted(set(cfg) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section(s) {', '.join(unknown)}; valid: {', '.join(SECTIONS)}.")
    check_seed(cfg["seed"], "seed")
    return cfg


MAX_SEED = 2**63 - 1  # torch generators take 64 bits; one bit spare for the offsets added to a seed


def check_seed(value: Any, where: str = "seed") -> int:
    """A seed is a whole number in [0, 2**63 - 1]; anything else (abc, 1.5, 2**70) is one sentence naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{where} must be a whole number from 0 to {MAX_SEED} (2**63 - 1), not {value!r}.")
    return value


def latent_cache_data(value: str) -> tuple[str, str | None]:
    """`--data DIR` with a latent cache in DIR means {name: imagenet256, path: DIR} (a Kinetics root or video
    latent cache: kinetics700); a name stays a name.

    A value that looks like a path (has a '/' or is a folder) but holds no cache is a ConfigError.
    """
    from flowzoo.data.kinetics import kinetics_data_dir  # lazy: config stays light

    kind = kinetics_data_dir(value)  # before the ImageNet rule: a video latent cache also has a manifest.json
    if kind:
        return kind, str(Path(value).expanduser())
    path = Path(value).expanduser()
    if "/" not in value and not (path / "manifest.json").is_file():
        return value, None
    if (path / "manifest.json").is_file():
        return "imagenet256", str(path)
    raise ConfigError(
        f"--data {value}: no latent cache (manifest.json) there; build one with "
        f"`flowzoo prepare imagenet256 --data IMAGENET_TRAIN_DIR --vae VAE --out {value}`, or pass a dataset name."
    )


def _name(spec: Any) -> str | None:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        return spec.get("name")
    return None


def build_dataclass(cls: type, values: dict[str, Any], where: str):
    """``cls(**values)`` with unknown keys and wrong types answered in one sentence."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; valid: {', '.join(sorted(fields))}.")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if not _type_ok(value, hints.get(key, Any)):
            raise ConfigError(f"{where}.{key} = {value!r} has the wrong type; expected {_type_name(hints[key])}.")
    return cls(**values)


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(_type_ok(v, args[0]) for v in value) if args else isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# Objective options added after records were committed, at the values that compute what a config without
# them computed. ObjectiveConfig.to_dict leaves them out at these values and so does config_hash, so a run
# that names one at its neutral value (e.g. a suite pinning `objective.fm_times: null` to keep the config its
# records ran) is the same experiment as the record written before the option existed.
OBJECTIVE_OPTIONS_NEUTRAL = {"tangent": "shift", "distill": None, "target_precision": "auto", "fm_times": None,
                             "label_dropout_on": "all", "intermediate_clamp": None, "directional_loss": 0.0}


def without_neutral_objective_options(objective: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in objective.items()
            if not (k in OBJECTIVE_OPTIONS_NEUTRAL and v == OBJECTIVE_OPTIONS_NEUTRAL[k])}


def config_hash(cfg: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a resolved config, without where its outputs go (out), which trackers
    watch it (train.loggers), or objective options at their neutral values (OBJECTIVE_OPTIONS_NEUTRAL):
    adding W&B to a run, or naming an option at the value that changes nothing, is not another experiment."""
    payload = {k: v for k, v in cfg.items() if k != "out"}
    if isinstance(payload.get("train"), dict) and "loggers" in payload["train"]:
        payload["train"] = {k: v for k, v in payload["train"].items() if k != "loggers"}
    if isinstance(payload.get("objective"), dict):
        payload["objective"] = without_neutral_objective_options(payload["objective"])
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
