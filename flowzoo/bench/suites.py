"""Registers the built-in suites: every benchmarks/suites/NAME.yaml becomes the benchmark NAME.

Each file is read and validated here, once, so that one bad file (random bytes, a folder named
zz.yaml, a key the schema does not know) costs only its own suite: it is reported in a warning naming
the file, left out of the registry, and `flowzoo bench NAME` says why in one sentence. Every other
command and suite works as before.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from flowzoo.bench.suite import SUITES_DIR, load_suite_file
from flowzoo.config import ConfigError
from flowzoo.registry import BENCHMARKS, Registry

SKIPPED: dict[str, str] = {}  # suite name -> the sentence saying why its file was left out


class SuiteFile:
    """A suite YAML, read again when the benchmark is used (so an edit since start-up counts)."""

    def __init__(self, path: Path, description: str = ""):
        self.path = Path(path)
        self.__doc__ = description.split(". ")[0].strip() or f"suite from {self.path.name}"

    def __call__(self):
        return load_suite_file(self.path)


def problem(path: Path) -> tuple[str | None, str]:
    """(why the suite file cannot be used, or None; its description)."""
    if not path.is_file():
        return f"suite file {path} is {'a folder' if path.is_dir() else 'not a regular file'}, not a YAML file", ""
    try:
        return None, load_suite_file(path).description
    except OSError as exc:
        return f"suite file {path} cannot be read ({exc.strerror or exc})", ""
    except ConfigError as exc:
        return str(exc).rstrip("."), ""


def register_suite_files(directory: Path = SUITES_DIR, registry: Registry = BENCHMARKS) -> dict[str, str]:
    """Register every readable, valid NAME.yaml in ``directory``; warn about (and return) the others."""
    skipped = {}
    for path in sorted(Path(directory).glob("*.yaml")) if Path(directory).is_dir() else []:
        why, description = problem(path)
        if why is None:
            registry.add(path.stem, SuiteFile(path, description))
            continue
        skipped[path.stem] = f"{why}; the suite '{path.stem}' is skipped (fix or remove the file)."
        warnings.warn(f"flowzoo: {skipped[path.stem]}", stacklevel=2)
    SKIPPED.update(skipped)
    return skipped


register_suite_files()
