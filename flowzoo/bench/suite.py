"""Benchmark suites: which methods, on which data, with which seeds, at what budget, evaluated how.

A suite is a YAML file in benchmarks/suites/ (registered in BENCHMARKS under its file name) or a
`Suite` object that a plugin registers through the ``flowzoo.benchmarks`` entry point. Its grid is
methods x data x seeds; every cell is one `flowzoo run` command, so each number on the leaderboard can
be re-run on its own with the command its record carries.

What a suite holds equal (``compare_at``):
- ``steps`` (the default): every method gets the same optimizer steps at the same batch size, hence the same
  number of images seen. Their wall time and FLOPs differ (a MeanFlow step costs more than a flow-matching
  step), so records carry them and the tables show them.
- ``flops``: every method gets the steps that spend the estimated training FLOPs of the suite's
  ``reference_method`` at the suite's budget (flowzoo.bench.budget: passes per step x forward FLOPs per
  sample, backward = 2 and JVP = 2 forwards; rounded to the nearest step). The reference of the budget is the
  reference of the paired comparisons, so "better than the reference" reads "at the reference's compute".
Each record says which it ran under (``compute.budget``).

``cpu_capability`` (optional, e.g. ``default``): every cell runs with ATEN_CPU_CAPABILITY set to it (torch's
CPU kernel set), and its command says so: a suite that measures how much the kernel set alone moves a result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowzoo import yaml_io
from flowzoo.bench.launch import Launch
from flowzoo.config import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
SUITES_DIR = REPO_ROOT / "benchmarks" / "suites"
COMPARE_AT = ("steps", "flops")
CPU_CAPABILITIES = ("default", "avx2", "avx512", "avx512_vnni", "zvector", "vsx", "sve256")
SUITE_KEYS = {"description", "data", "seeds", "nfe", "methods", "budget", "set", "rank_by", "compare_at", "notes", "cpu_capability",
              "reference_method", "collapse"}
METHOD_KEYS = {"name", "objective", "schedule", "set", "sampler", "config"}
METHOD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclass(frozen=True)
class Method:
    """One row of a suite: a registered objective, optionally a schedule and config overrides."""

    name: str
    objective: str
    schedule: str | None = None
    sets: tuple[tuple[str, Any], ...] = ()  # (dotted key, value): --set key=value
    sampler: str | None = None  # None: the objective's own sampler
    config: str | None = None  # an experiment file (e.g. configs/experiment/alphaflow-B2.yaml, relative to the repository): --config


@dataclass(frozen=True)
class RankBy:
    """The metric a table is sorted and bolded by, per dataset family."""

    metric: str
    lower_is_better: bool = True


@dataclass(frozen=True)
class Collapse:
    """A run has collapsed when its lowest-NFE rank metric is worse than `multiple` x the record's
    reference point `reference` (a key of the record's "reference", e.g. class_means/fd: worse than
    drawing each class's mean image). `samplers`, when given, limits the rule to rows drawn with those
    samplers: a flow-matching model under one Euler step draws its blurred conditional mean by design
    (Fashion-MNIST: FD ~300 against class means' 208), which is the baseline's nature, not a run that
    collapsed, so a suite judges only its few-step samplers."""

    reference: str
    multiple: float = 1.0
    samplers: tuple[str, ...] = ()  # empty: every row

    def judges(self, sampler: str) -> bool:
        return not self.samplers or sampler in self.samplers


@dataclass
class Suite:
    name: str
    description: str
    data: list[str]
    seeds: list[int]
    nfe: list[int]
    methods: list[Method]
    budget: dict[str, Any] = field(default_factory=dict)  # dotted key -> value, the same for every method
    sets: dict[str, Any] = field(default_factory=dict)  # dotted key -> value, evaluation settings etc.
    rank_by: dict[str, RankBy] = field(default_factory=dict)  # metric family (e.g. "digits") -> ranking metric
    compare_at: str = "steps"
    notes: str = ""
    reference_method: str | None = None  # the method every other is compared to on paired seeds (default: the first)
    collapse: Collapse | None = None
    cpu_capability: str | None = None  # ATEN_CPU_CAPABILITY for every cell (None: the machine's best kernel set)
    flops_reference: Method | None = None  # compare_at flops: the method whose FLOPs every method spends
    _budgets: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # (data, method) -> budget

    def cells(self) -> list["Cell"]:
        """The grid in the order it runs: seed-major, so a partial run already has every method at seed 0."""
        return [Cell(self, method, data, seed) for seed in self.seeds for data in self.data for method in self.methods]


@dataclass(frozen=True)
class Cell:
    suite: Suite
    method: Method
    data: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.suite.name}/{self.data.replace(':', '-')}/{self.method.name}-s{self.seed}"

    def run_dir(self, root: Path) -> Path:
        return Path(root) / self.key

    def sampler(self) -> str:
        from flowzoo.registry import OBJECTIVES

        return self.method.sampler or getattr(OBJECTIVES.get(self.method.objective), "default_sampler", "meanflow")

    def config_file(self, shown: bool = False) -> str | None:
        """The method's experiment file: as written in the suite (shown in commands), or its absolute path."""
        if self.method.config is None:
            return None
        return self.method.config if shown else str(REPO_ROOT / self.method.config)

    def budget(self) -> dict[str, Any]:
        """What this cell holds equal with the others: {"equal": "steps"}, or the equal-FLOPs step count and
        its arithmetic (flowzoo.bench.budget.equal_flops_budget), computed once per method and data."""
        if self.suite.compare_at != "flops":
            return {"equal": "steps"}
        key = (self.data, self.method.name)
        if key not in self.suite._budgets:
            from flowzoo.bench.budget import equal_flops_budget

            self.suite._budgets[key] = equal_flops_budget(self.suite, self.method, self.data)
        return self.suite._budgets[key]

    def run_args(self, runs_root: Path, shown: bool = False, budget: bool = True) -> list[str]:
        """The `flowzoo run` arguments of this cell (its record stores them as the command to re-run;
        ``shown``: the experiment file as the suite names it, relative to the repository root; ``budget``
        False: without the equal-FLOPs step count, i.e. at the suite's own train.steps)."""
        args = ["--config", self.config_file(shown)] if self.method.config else []
        args += ["--objective", self.method.objective]
        if self.method.schedule:
            args += ["--schedule", self.method.schedule]
        args += ["--data", self.data, "--seed", str(self.seed), "--out", str(self.run_dir(runs_root)), "--quiet"]
        sets = {**self.suite.budget, "eval.curve": True, "eval.samplers": {self.sampler(): list(self.suite.nfe)},
                **self.suite.sets, **dict(self.method.sets)}
        if budget and self.suite.compare_at == "flops":
            sets["train.steps"] = self.budget()["steps"]
        for key, value in sets.items():
            args += ["--set", f"{key}={_yaml_inline(value)}"]
        return args

    def command(self, runs_root: Path, launch: Launch | None = None) -> str:
        """The command that trains this cell, as a user types it (``launch``: torchrun, see bench/launch.py)."""
        env = f"ATEN_CPU_CAPABILITY={self.suite.cpu_capability} " if self.suite.cpu_capability else ""
        return env + (launch or Launch()).shown(self.run_args(runs_root, shown=True))

    def resolved_config(self, runs_root: Path, budget: bool = True) -> dict[str, Any]:
        """The config `flowzoo run` will train with (its hash decides whether a result is still valid)."""
        from flowzoo.config import parse_set, resolve

        args = self.run_args(runs_root, budget=budget)
        sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        parse_set(sets)  # one clear sentence for a malformed value before anything runs
        return resolve(objective=self.method.objective, schedule=self.method.schedule, backbone=None, data=self.data,
                       config_file=self.config_file(), sets=sets,
                       flags={"seed": self.seed, "out": str(self.run_dir(runs_root))})


def with_overrides(suite: Suite, *, data: str | None = None, sets: list[str] = ()) -> Suite:
    """The suite on the user's copy of its data (data.path) and with extra `--set key=value`s in every cell."""
    from dataclasses import replace

    from flowzoo.config import parse_set

    if data is not None and len(suite.data) != 1:
        raise ConfigError(f"suite '{suite.name}' runs on {len(suite.data)} datasets; --data can only point one at your copy.")
    extra = {"data.path": str(Path(data).expanduser())} if data is not None else {}
    for item in sets:
        parse_set([item])  # one sentence for a malformed assignment
        key, _, raw = item.partition("=")
        extra[key.strip()] = yaml_io.load(raw)
    return replace(suite, sets={**suite.sets, **extra})


def only_methods(suite: Suite, names: str | None) -> Suite:
    """The suite restricted to the comma-separated methods ``names`` (None: all of them)."""
    from dataclasses import replace

    if not names:
        return suite
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = [m.name for m in suite.methods]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ConfigError(f"suite '{suite.name}' has no method {unknown[0]!r}; its methods are {', '.join(known)}.")
    return replace(suite, methods=[m for m in suite.methods if m.name in wanted])


def _yaml_inline(value: Any) -> str:
    return yaml_io.dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def _mapping(mapping: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """A {dotted.key: value} mapping (None: empty); anything else is one sentence naming `where`."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a mapping of dotted config keys to values (e.g. train.steps: 1000).")
    return dict(mapping)


def suite_from_dict(name: str, spec: dict[str, Any], where: str = "suite") -> Suite:
    """Validate a suite mapping (from YAML or a plugin); every mistake is one sentence naming the key."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must hold a mapping.")
    unknown = set(spec) - SUITE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(SUITE_KEYS))}.")
    for key in ("data", "seeds", "methods"):
        if not spec.get(key):
            raise ConfigError(f"{where}: '{key}' is required and must not be empty.")
    data = [spec["data"]] if isinstance(spec["data"], str) else list(spec["data"])
    seeds, nfe = spec["seeds"], spec.get("nfe", [1, 2])
    if not all(isinstance(s, int) for s in seeds) or not all(isinstance(n, int) and n > 0 for n in nfe):
        raise ConfigError(f"{where}: seeds must be integers and nfe positive integers.")
    methods = []
    for i, m in enumerate(spec["methods"]):
        if not isinstance(m, dict) or "name" not in m or "objective" not in m:
            raise ConfigError(f"{where}: methods[{i}] needs a name and an objective.")
        bad = set(m) - METHOD_KEYS
        if bad:
            raise ConfigError(f"{where}: methods[{i}] has unknown key(s) {', '.join(sorted(bad))}; valid: {', '.join(sorted(METHOD_KEYS))}.")
        if not METHOD_NAME.fullmatch(str(m["name"])):  # it names the cell's run folder and record file
            raise ConfigError(f"{where}: methods[{i}] name {str(m['name'])!r} must be letters, digits, '.', '_', '+' "
                              f"or '-' (no '/' or spaces): it becomes a folder and a file name.")
        sets = tuple(_mapping(m.get("set"), f"{where}: methods[{i}].set").items())
        config = m.get("config")
        if config is not None and not (REPO_ROOT / str(config)).is_file():
            raise ConfigError(f"{where}: methods[{i}].config names {config}, which is not a file of the repository.")
        methods.append(Method(str(m["name"]), str(m["objective"]), m.get("schedule"), sets, m.get("sampler"),
                              None if config is None else str(config)))
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: method names must be unique (got {', '.join(names)}).")
    compare_at = spec.get("compare_at", "steps")
    if compare_at not in COMPARE_AT:
        raise ConfigError(f"{where}: compare_at must be 'steps' (equal optimizer steps and batch size) or 'flops' (equal "
                          f"estimated training FLOPs, those of the reference_method), got {compare_at!r}.")
    capability = spec.get("cpu_capability")
    if capability is not None and str(capability).lower() not in CPU_CAPABILITIES:
        raise ConfigError(f"{where}: cpu_capability must be one of {', '.join(CPU_CAPABILITIES)} (torch's ATEN_CPU_CAPABILITY), got {capability!r}.")
    rank_by = {}
    for family, r in (spec.get("rank_by") or {}).items():
        if not isinstance(r, dict) or "metric" not in r:
            raise ConfigError(f"{where}: rank_by.{family} needs a metric (and lower_is_better).")
        rank_by[family] = RankBy(str(r["metric"]), bool(r.get("lower_is_better", True)))
    reference_method = spec.get("reference_method", names[0])
    if reference_method not in names:
        raise ConfigError(f"{where}: reference_method {reference_method!r} is not one of the methods ({', '.join(names)}).")
    collapse = spec.get("collapse")
    if collapse is not None:
        samplers = collapse.get("samplers", []) if isinstance(collapse, dict) else None
        if not isinstance(collapse, dict) or set(collapse) - {"reference", "multiple", "samplers"} or "reference" not in collapse \
                or not isinstance(collapse.get("multiple", 1.0), (int, float)) or isinstance(collapse.get("multiple"), bool) \
                or not isinstance(samplers, list) or not all(isinstance(x, str) for x in samplers):
            raise ConfigError(f"{where}: collapse must be {{reference: <reference key, e.g. class_means/fd>, multiple: <number>"
                              f"[, samplers: <list of sampler names judged, e.g. [meanflow]>]}}.")
        _check_samplers_registered(samplers, f"{where}: collapse.samplers")
        collapse = Collapse(str(collapse["reference"]), float(collapse.get("multiple", 1.0)), tuple(samplers))
    return Suite(name=name, description=str(spec.get("description", "")).strip(), data=data, seeds=list(seeds),
                 nfe=list(nfe), methods=methods, budget=_mapping(spec.get("budget"), f"{where}: budget"),
                 sets=_mapping(spec.get("set"), f"{where}: set"), rank_by=rank_by, compare_at=compare_at,
                 notes=str(spec.get("notes", "")).strip(), reference_method=reference_method, collapse=collapse,
                 cpu_capability=None if capability is None else str(capability).lower(),
                 flops_reference=next(m for m in methods if m.name == reference_method) if compare_at == "flops" else None)


def _check_samplers_registered(names: list[str], where: str) -> None:
    """A misspelt sampler (meanfow) would match no row, so every row would read "not judged" and a real
    collapse would go unreported: refuse the name instead, with the registry's suggestion."""
    from flowzoo.registry import SAMPLERS, RegistryError

    for name in names:
        try:
            SAMPLERS.entry(name, trusted=False)  # registered names only: a record's sampler is one of these
        except RegistryError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def load_suite_file(path: Path) -> Suite:
    from flowzoo.config import load_yaml

    return suite_from_dict(Path(path).stem, load_yaml(path), where=f"suite file {path}")


def get_suite(name: str) -> Suite:
    """A registered suite by name (built-in YAML or a plugin's Suite / mapping / zero-argument factory)."""
    from flowzoo.registry import BENCHMARKS

    obj = BENCHMARKS.get(name)
    if callable(obj) and not isinstance(obj, Suite):
        obj = obj()
    if isinstance(obj, dict):
        obj = suite_from_dict(name, obj, where=f"benchmark '{name}'")
    if not isinstance(obj, Suite):
        raise ConfigError(f"benchmark '{name}' is registered as {type(obj).__name__}, not a Suite.")
    return obj
