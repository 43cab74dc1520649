"""A result record from a finished `flowzoo run` directory (config.yaml, result.json, metrics.jsonl, eval_curve.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from flowzoo import yaml_io
from flowzoo.jsonl import read_by_step
from flowzoo.leaderboard.record import SCHEMA, RecordError, validate_record

SCHEDULE_POINTS = 200  # alpha and fm_ratio over training, subsampled to at most this many log lines


def training_schedules(metrics_path: Path) -> dict[str, list[float]]:
    """{"step": [...], "alpha": [...], "fm_ratio": [...]} as logged during training (last line per step)."""
    by_step = {int(m["step"]): m for m in read_by_step(metrics_path)}
    steps = sorted(by_step)
    if len(steps) > SCHEDULE_POINTS:
        stride = -(-len(steps) // SCHEDULE_POINTS)
        steps = steps[::stride] + ([steps[-1]] if (len(steps) - 1) % stride else [])
    out: dict[str, list[float]] = {"step": steps}
    for key in ("alpha", "fm_ratio"):
        if steps and all(key in by_step[s] for s in steps):
            out[key] = [round(float(by_step[s][key]), 6) for s in steps]
    return out


def finished_at(result_path: Path) -> str:
    """When the run finished: result.json is written last (UTC, ISO 8601, seconds)."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(result_path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_from_run(run_dir: Path, *, benchmark: str, method: str, command: str) -> dict[str, Any]:
    """The record of one finished run; RecordError (one sentence) when the directory is not one."""
    from flowzoo.pipeline.run import CURVE_FILE

    run_dir = Path(run_dir)
    result_path, config_path = run_dir / "result.json", run_dir / "config.yaml"
    if not result_path.is_file() or not config_path.is_file():
        raise RecordError(f"{run_dir} has no finished run (result.json and config.yaml are written at the end)")
    try:
        result = json.loads(result_path.read_text())
        config = yaml_io.load(config_path.read_text())
    except (ValueError, yaml.YAMLError):
        raise RecordError(f"{run_dir}: result.json or config.yaml is unreadable") from None
    prov = result["provenance"]
    config = {k: v for k, v in config.items() if k != "out"}  # where it ran is not what it is
    evaluations = []
    for key, metrics in result["results"].items():
        sampler, _, nfe = key.rpartition("@")
        evaluations.append({"sampler": sampler, "nfe": int(nfe), "metrics": metrics})
    record = {
        "schema": SCHEMA,
        "benchmark": benchmark,
        "method": method,
        "preset": result["objective"],
        "schedule": result.get("schedule"),
        "data": result["data"],
        "backbone": result["backbone"],
        "config": config,
        "config_hash": prov["config_hash"],
        "command": command,
        "code": {"commit": prov.get("commit"), "dirty": prov.get("dirty")},
        "finished": finished_at(result_path),
        "versions": prov.get("versions", {}),
        "plugins": prov.get("plugins", {}),  # {"kind:name": {dist, version}} of out-of-tree entries the run used
        "hardware": prov.get("hardware"),  # CPU model + torch CPU capability (+ GPU, driver, CUDA, cuDNN); None: not recorded
        "seed": int(prov["seed"]),
        "evaluations": evaluations,
        "reference": result.get("reference", {}),
        "compute": {
            "steps": prov["steps"], "batch_size": config.get("train", {}).get("batch_size"),
            "images_seen": prov["images_seen"], "wall_time_s": prov["wall_time_s"], "device": prov.get("device"),
            "world_size": prov.get("world_size"), "skipped_steps": prov.get("skipped_steps"),
            "threads": prov.get("threads"),
            "tf32": prov.get("tf32"),  # what fp32 matmuls and convolutions ran in (None: not recorded)
        },
        "protocol": {
            "metrics": result.get("metric_info", {name: {"implementation": name} for name in result.get("metrics", [])}),
            "num_samples": config.get("eval", {}).get("num_samples"),
            "guidance": config.get("eval", {}).get("guidance", 1.0),
            "sampled_from": result.get("sampled_from"),
        },
        "curve": [{k: line[k] for k in ("step", "images_seen", "wall_time_s", "sampler", "nfe", "metrics")}
                  for line in read_by_step(run_dir / CURVE_FILE)],
        "schedules": training_schedules(run_dir / "metrics.jsonl"),
    }
    record["compute"].update(_training_compute(config, run_dir))
    record["compute"]["gpu_hours"] = gpu_hours(record["compute"])
    validate_record(record)
    return record


def gpu_hours(compute: dict[str, Any]) -> float | None:
    """Measured GPU-hours of the training: its wall time x the processes (one GPU each); None on a CPU."""
    device, wall = str(compute.get("device") or ""), compute.get("wall_time_s")
    if not device or device.startswith("cpu") or wall is None:
        return None
    return round(float(wall) * int(compute.get("world_size") or 1) / 3600, 4)


def _training_compute(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Passes per step and FLOPs (flowzoo.leaderboard.compute_cost); a record is still written without them."""
    import warnings

    from flowzoo.leaderboard.compute_cost import training_compute

    try:
        return training_compute(config)
    except Exception as exc:  # noqa: BLE001 (the record of a finished run must not be lost to an estimate)
        warnings.warn(f"{run_dir}: training compute not estimated ({type(exc).__name__}: {exc})")
        return {}
