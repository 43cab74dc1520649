"""Reported rows: published numbers (leaderboard/reported.yaml), shown beside ours, never ranked with them.

The schema is strict: a section or row key it does not know is refused, because the usual cause is a YAML
flow mapping split by an unquoted comma (`{model: B/2 (no cfg, run)}` gives `model: "B/2 (no cfg"` and a
stray key `run)`), which would otherwise reach the page truncated. Every row names its source, and a
source that names a file of this repository must point at one that exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flowzoo import yaml_io

from flowzoo.config import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REPORTED = REPO_ROOT / "leaderboard" / "reported.yaml"
MARK = "reported, not reproduced"

SECTION_KEYS = {"benchmark", "title", "metric", "columns", "rows"}
ROW_KEYS = {"method", "source", "model", "params", "epochs", "protocol", "flowzoo_method"}
# A token like `shared/reference/reported.yaml`: slash-separated with a file extension, not a URL.
_REPO_PATH = re.compile(r"^[\w.-]+(?:/[\w.-]+)+\.[A-Za-z0-9]{1,5}$")
_NOT_A_REPO_PATH = ("github.com/", "gitlab.com/", "huggingface.co/", "arxiv.org/", "doi.org/", "www.")


@dataclass
class ReportedSection:
    key: str
    benchmarks: tuple[str, ...]  # every suite the rows are shown beside (benchmark: a name or a list)
    title: str
    metric: str
    columns: dict[str, str]
    rows: list[dict[str, Any]]


def repository_paths(source: str) -> list[str]:
    """The tokens of a `source` that read as paths inside this repository (URLs and hosts excluded)."""
    tokens = re.split(r"[\s,;()\"']+", source)
    return [t for t in tokens if "://" not in t and not t.startswith(_NOT_A_REPO_PATH) and _REPO_PATH.match(t)]


def _check_row(path: Path, key: str, i: int, row: Any, columns: dict, root: Path) -> None:
    where = f"{path}: {key}.rows[{i}]"
    if not isinstance(row, dict) or not row.get("method") or not str(row.get("source") or "").strip():
        raise ConfigError(f"{where} needs a method and a non-empty source (the paper and table, or the public repository).")
    unknown = sorted(set(row) - ROW_KEYS - set(columns))
    if unknown:
        raise ConfigError(f"{where} (method {row['method']!r}) has unknown key {unknown[0]!r}; known keys are "
                          f"{', '.join(sorted(ROW_KEYS | set(columns)))} (quote a value that holds a comma).")
    for rel in repository_paths(str(row["source"])):
        if not (root / rel).exists():
            raise ConfigError(f"{where} (method {row['method']!r}) cites {rel}, which is not in the repository; "
                              "cite the paper and table, or the public repository, instead.")


def load_reported(path: Path | None = None, root: Path = REPO_ROOT) -> list[ReportedSection]:
    """Validated sections; a malformed file is one sentence (every row must name its source)."""
    path = Path(path) if path else DEFAULT_REPORTED
    if not path.is_file():
        return []
    try:
        data = yaml_io.load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}).") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not valid YAML (not UTF-8 text).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (name: {{benchmark, metric, columns, rows}}), "
                          f"not a {type(data).__name__}.")
    sections = []
    for key, spec in data.items():
        if not isinstance(spec, dict) or not all(k in spec for k in ("benchmark", "metric", "columns", "rows")):
            raise ConfigError(f"{path}: section '{key}' needs benchmark, metric, columns and rows.")
        if not isinstance(spec["columns"], dict) or not isinstance(spec["rows"], list):
            raise ConfigError(f"{path}: section '{key}' needs columns as a mapping and rows as a list.")
        unknown = sorted(set(spec) - SECTION_KEYS)
        if unknown:
            raise ConfigError(f"{path}: section '{key}' has unknown key {unknown[0]!r}; known keys are "
                              f"{', '.join(sorted(SECTION_KEYS))}.")
        for i, row in enumerate(spec["rows"]):
            _check_row(path, key, i, row, dict(spec["columns"]), root)
        benchmarks = spec["benchmark"] if isinstance(spec["benchmark"], list) else [spec["benchmark"]]
        if not benchmarks or not all(isinstance(b, str) and b for b in benchmarks):
            raise ConfigError(f"{path}: section '{key}' benchmark must be a suite name or a list of them.")
        sections.append(ReportedSection(key, tuple(benchmarks), str(spec.get("title", key)), str(spec["metric"]),
                                        dict(spec["columns"]), list(spec["rows"])))
    return sections
