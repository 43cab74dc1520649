"""Reported rows: published numbers (leaderboard/reported.yaml), shown beside ours, never ranked with them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flowzoo.config import ConfigError

DEFAULT_REPORTED = Path(__file__).resolve().parents[2] / "leaderboard" / "reported.yaml"
MARK = "reported, not reproduced"


@dataclass
class ReportedSection:
    key: str
    benchmark: str
    title: str
    metric: str
    columns: dict[str, str]
    rows: list[dict[str, Any]]


def load_reported(path: Path | None = None) -> list[ReportedSection]:
    """Validated sections; a malformed file is one sentence (every row must name its source)."""
    path = Path(path) if path else DEFAULT_REPORTED
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}).") from None
    sections = []
    for key, spec in data.items():
        if not isinstance(spec, dict) or not all(k in spec for k in ("benchmark", "metric", "columns", "rows")):
            raise ConfigError(f"{path}: section '{key}' needs benchmark, metric, columns and rows.")
        for i, row in enumerate(spec["rows"]):
            if not isinstance(row, dict) or not row.get("method") or not row.get("source"):
                raise ConfigError(f"{path}: {key}.rows[{i}] needs a method and a source.")
        sections.append(ReportedSection(key, str(spec["benchmark"]), str(spec.get("title", key)), str(spec["metric"]),
                                        dict(spec["columns"]), list(spec["rows"])))
    return sections
