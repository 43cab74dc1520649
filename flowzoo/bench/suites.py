"""Registers the built-in suites: every benchmarks/suites/NAME.yaml becomes the benchmark NAME."""

from __future__ import annotations

from pathlib import Path

import yaml

from flowzoo import yaml_io
from flowzoo.bench.suite import SUITES_DIR, load_suite_file
from flowzoo.registry import BENCHMARKS


class SuiteFile:
    """A suite YAML, read (and validated) when the benchmark is used, so a broken file hides no other."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            description = str((yaml_io.load(self.path.read_text()) or {}).get("description", ""))
        except (yaml.YAMLError, AttributeError):
            description = f"(unreadable: {self.path.name})"
        self.__doc__ = description.split(". ")[0].strip() or f"suite from {self.path.name}"

    def __call__(self):
        return load_suite_file(self.path)


for _path in sorted(SUITES_DIR.glob("*.yaml")) if SUITES_DIR.is_dir() else []:
    BENCHMARKS.add(_path.stem, SuiteFile(_path))
