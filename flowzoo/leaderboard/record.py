"""Result records: one JSON file per benchmark run, with a schema that is checked on every read.

A record says what ran (method, preset, the resolved config and its hash, the command that re-runs it),
with what code (git commit, package versions), how much it trained (steps, images seen, wall time),
what it scored (metrics per sampler and NFE, the training curve) and how it was measured (the metric
implementation, the feature extractor's weights hash, the reference statistics' hash). Two records whose
protocol differs are never ranked together: `protocol_id` is the hash that decides that.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from pathlib import Path
from typing import Any

SCHEMA = "flowzoo.result/1"


class RecordError(ValueError):
    """A record file that cannot be used; the message is one sentence naming the file and the problem."""


# field -> allowed types; nested requirements are checked in validate_record.
REQUIRED: dict[str, tuple[type, ...]] = {
    "schema": (str,), "benchmark": (str,), "method": (str,), "preset": (str,), "schedule": (str, type(None)),
    "data": (str,), "backbone": (str,), "config": (dict,), "config_hash": (str,), "command": (str,),
    "code": (dict,), "versions": (dict,), "seed": (int,), "evaluations": (list,), "reference": (dict,),
    "compute": (dict,), "protocol": (dict,),
}
COMPUTE_KEYS = ("steps", "batch_size", "images_seen", "wall_time_s")
EVALUATION_KEYS = ("sampler", "nfe", "metrics")
# Names that become headings, table cells and plot file names: short, and no control characters.
NAME_FIELDS = ("benchmark", "method", "preset", "schedule", "data", "backbone")
MAX_NAME = 120


def _check_name(where: str, value: str) -> None:
    if len(value) > MAX_NAME:
        raise RecordError(f"{where} is {len(value)} characters long (at most {MAX_NAME})")
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Cs")), None)
    if bad is not None:
        raise RecordError(f"{where} holds the control character {bad!r}")


def _check_number(where: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise RecordError(f"{where} is not a number")
    if not math.isfinite(value):
        raise RecordError(f"{where} is {value} (not finite: a diverged run is not a result)")


def validate_record(record: Any) -> None:
    """Raise RecordError (one sentence) unless `record` follows the schema."""
    if not isinstance(record, dict):
        raise RecordError("the file does not hold a JSON object")
    if record.get("schema") != SCHEMA:
        raise RecordError(f"schema is {record.get('schema')!r}, expected {SCHEMA!r}")
    for key, types in REQUIRED.items():
        if key not in record:
            raise RecordError(f"the required field '{key}' is missing")
        if not isinstance(record[key], types) or (types == (int,) and isinstance(record[key], bool)):
            raise RecordError(f"field '{key}' has type {type(record[key]).__name__}")
    for key in NAME_FIELDS:
        if record[key] is not None:
            _check_name(f"field '{key}'", record[key])
    for key in COMPUTE_KEYS:
        if not isinstance(record["compute"].get(key), (int, float)):
            raise RecordError(f"compute.{key} is missing or not a number")
    if not record["evaluations"]:
        raise RecordError("evaluations is empty")
    for i, ev in enumerate(record["evaluations"]):
        if not isinstance(ev, dict) or any(k not in ev for k in EVALUATION_KEYS):
            raise RecordError(f"evaluations[{i}] needs sampler, nfe and metrics")
        if not isinstance(ev["nfe"], int) or not isinstance(ev["metrics"], dict):
            raise RecordError(f"evaluations[{i}] has a non-integer nfe or non-mapping metrics")
        if not isinstance(ev["sampler"], str):
            raise RecordError(f"evaluations[{i}].sampler is not a string")
        _check_name(f"evaluations[{i}].sampler", ev["sampler"])
        for name, value in ev["metrics"].items():
            _check_name(f"evaluations[{i}] metric name", name)
            _check_number(f"evaluations[{i}].metrics.{name}", value)
    for name, value in record["reference"].items():
        _check_name("a reference name", name)
        _check_number(f"reference.{name}", value)
    if "metrics" not in record["protocol"]:
        raise RecordError("protocol.metrics (the metric implementations and their hashes) is missing")
    if config_hash_of(record["config"]) != record["config_hash"]:
        raise RecordError("config_hash does not match the config it describes (the record was edited)")


def config_hash_of(config: dict[str, Any]) -> str:
    from flowzoo.config import config_hash

    return config_hash(config)


def protocol_id(record: dict[str, Any]) -> str:
    """Short hash of the evaluation protocol: records are comparable only when these are equal."""
    canonical = json.dumps(record["protocol"], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def cell_key(record: dict[str, Any]) -> tuple[str, str, str, int]:
    """What a record is a result for; two records with one key are duplicates."""
    return record["benchmark"], record["data"], record["method"], record["seed"]


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path} cannot be read ({exc.__class__.__name__})") from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    try:
        validate_record(record)
    except RecordError as exc:
        raise RecordError(f"{path} is not a valid result record: {exc}") from None
    return record


def write_record(path: Path, record: dict[str, Any]) -> Path:
    """Validate, then write atomically: a crash leaves the old record or the new one, never half of one."""
    from flowzoo.atomic import write_json

    validate_record(record)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(path), record)
    return Path(path)


class LoadedRecords:
    """Valid records plus everything that was left out, and why (nothing is dropped silently)."""

    def __init__(self):
        self.records: list[dict[str, Any]] = []
        self.paths: list[Path] = []
        self.invalid: list[tuple[Path, str]] = []
        self.duplicates: list[tuple[Path, Path, bool]] = []  # (left out, kept, identical metrics?)
        self.dirty: list[tuple[Path, str]] = []  # (left out, its commit): trained from uncommitted code

    def problems(self) -> list[str]:
        lines = [f"skipped {why}" for _, why in self.invalid]
        for path, commit in self.dirty:
            lines.append(f"left out {path}: trained from a dirty tree (uncommitted changes on {commit[:8]}), so its "
                         "code cannot be checked out again; `flowzoo leaderboard build --allow-dirty` shows it, marked *")
        for dropped, kept, same in self.duplicates:
            how = "an identical" if same else "a DIFFERENT"
            lines.append(f"skipped {dropped}: duplicate of {kept} ({how} result for the same benchmark, data, method and seed)")
        return lines


def is_dirty(record: dict[str, Any]) -> bool:
    """True when the run's code had uncommitted changes, so no commit reproduces it. (An unknown commit,
    e.g. a pip-installed release, is not dirty: its version names the code.)"""
    return record["code"].get("dirty") is True


def load_records(root: Path, allow_dirty: bool = False) -> LoadedRecords:
    """Every *.json under root, in path order; the first record of each cell wins, later ones are reported.
    Records from dirty trees are left out (and listed) unless allow_dirty."""
    loaded = LoadedRecords()
    kept: dict[tuple, int] = {}
    for path in sorted(Path(root).rglob("*.json")) if Path(root).is_dir() else []:
        try:
            record = read_record(path)
        except RecordError as exc:
            loaded.invalid.append((path, str(exc)))
            continue
        if is_dirty(record) and not allow_dirty:
            loaded.dirty.append((path, str(record["code"].get("commit") or "unknown")))
            continue
        key = cell_key(record)
        if key in kept:
            first = loaded.records[kept[key]]
            loaded.duplicates.append((path, loaded.paths[kept[key]], first["evaluations"] == record["evaluations"]))
            continue
        kept[key] = len(loaded.records)
        loaded.records.append(record)
        loaded.paths.append(path)
    return loaded
