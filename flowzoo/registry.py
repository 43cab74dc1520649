"""Plugin registries: one per kind of part (objective, schedule, backbone, ...).

Built-ins register with a decorator (``@OBJECTIVES.register("meanflow")``). Other installed packages
register through entry points, one group per kind (``[project.entry-points."flowzoo.objectives"]``),
loaded lazily on the first lookup or listing. ``"pkg.module:attr"`` works anywhere a name the user types
does, as an escape hatch for code that is importable but not registered; a lookup with ``trusted=False``
(a name read from a run directory, which is data) accepts registered names only and imports nothing.

Errors a user can make (an unknown name, a clashing plugin) raise ``RegistryError`` with one sentence
that says what to do; the CLI turns it into a clean exit.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import importlib.metadata as metadata
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping


class RegistryError(LookupError):
    """A name that is unknown, duplicated or unloadable; the message is one sentence for the user."""


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    source: str  # "flowzoo" for built-ins, the distribution name for plugins, "import path" for pkg:attr
    version: str | None = None  # the plugin distribution's version (entry points only)


class Registry:
    """Name -> object for one kind of part, filled by decorators and entry points."""

    def __init__(self, kind: str, group: str):
        self.kind = kind
        self.group = group  # entry-point group, e.g. "flowzoo.objectives"
        self._entries: dict[str, Entry] = {}
        self._plugins_loaded = False
        self.failed_plugins: dict[str, str] = {}  # entry-point name -> why it did not load

    # -- registration -------------------------------------------------------------------------------
    def register(self, name: str | None = None, *, source: str = "flowzoo") -> Callable[[Any], Any]:
        """Decorator: ``@REG.register("name")`` (or no name: the object's ``__name__``)."""

        def decorator(obj: Any) -> Any:
            self.add(name or obj.__name__, obj, source=source)
            return obj

        return decorator

    def add(self, name: str, obj: Any, *, source: str = "flowzoo", version: str | None = None) -> None:
        if name in self._entries:
            previous = self._entries[name].source
            if self._entries[name].obj is obj and previous == source:
                return  # the same entry seen again (a rescan of the entry points), not a second one
            raise RegistryError(
                f"{self.kind} '{name}' is registered twice (by {previous} and by {source}); "
                f"rename one of them."
            )
        self._entries[name] = Entry(name, obj, source, version)

    # -- plugins ------------------------------------------------------------------------------------
    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        load_builtins()  # built-ins first, so a plugin that reuses a built-in name is the one reported
        for ep in metadata.entry_points(group=self.group):
            dist = getattr(ep, "dist", None)
            source = dist.name if dist is not None else ep.value
            version = dist.version if dist is not None else None
            try:
                obj = ep.load()
            except SystemExit as exc:  # sys.exit() on import would end the command silently, even mid-run
                raise RegistryError(
                    f"{self.kind} plugin '{ep.name}' ({ep.value}) from {source} called sys.exit({exc.code!r}) while "
                    f"being imported; fix or uninstall {source}."
                ) from None
            except Exception as exc:  # a broken plugin must not break the rest
                self.failed_plugins[ep.name] = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"flowzoo: {self.kind} plugin '{ep.name}' from {source} failed to import "
                    f"({type(exc).__name__}: {exc}); it is skipped.",
                    stacklevel=2,
                )
                continue
            self.add(ep.name, obj, source=source, version=version)

    # -- lookup -------------------------------------------------------------------------------------
    def get(self, name: str, *, trusted: bool = True) -> Any:
        return self.entry(name, trusted=trusted).obj

    def entry(self, name: str, *, trusted: bool = True) -> Entry:
        """The entry registered as ``name``; ``trusted=False`` refuses import paths (never imports them)."""
        if name in self._entries:
            return self._entries[name]
        load_builtins()
        if name in self._entries:
            return self._entries[name]
        self._load_plugins()
        if name in self._entries:
            return self._entries[name]
        if ":" in name:
            if not trusted:
                raise RegistryError(
                    f"{self.kind} '{name}' is an import path, and a run directory may name only registered "
                    f"{self.kind}s (built-ins or installed entry points, see `flowzoo list {self.kind}`), "
                    f"so no code it names is imported."
                )
            return Entry(name, _import_attr(name, self.kind), "import path")
        if name in self.failed_plugins:
            raise RegistryError(
                f"{self.kind} '{name}' is a plugin that failed to import ({self.failed_plugins[name]})."
            )
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        raise RegistryError(
            f"unknown {self.kind} '{name}': {hint}registered: {', '.join(sorted(self._entries))}."
        )

    def build(self, spec: Any, *, trusted: bool = True, **extra: Any) -> Any:
        """Call the registered factory named by ``spec``: a name, or a mapping {name: ..., **arguments}.

        ``extra`` are arguments the caller always supplies (e.g. ``total_steps`` for schedules);
        ``trusted=False`` for a spec read from a run directory (registered names only, see ``entry``).
        Arguments the factory does not take are reported in one sentence, before anything runs.
        """
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise RegistryError(f"a {self.kind} is given by a name or a mapping with a 'name' key, not {spec!r}.")
        args = {k: v for k, v in spec.items() if k != "name"}
        factory = self.get(spec["name"], trusted=trusted)
        try:
            inspect.signature(factory).bind(**args, **extra)
        except TypeError as exc:
            raise RegistryError(f"{self.kind} '{spec['name']}' got bad arguments ({exc}).") from None
        except ValueError:  # no signature to check (some builtins): let the call itself decide
            pass
        return factory(**args, **extra)

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        self._load_plugins()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def _import_attr(path: str, kind: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"cannot import module '{module_name}' for {kind} '{path}': {exc}.") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RegistryError(f"module '{module_name}' has no attribute '{attr}' (asked for {kind} '{path}').")
        obj = getattr(obj, part)
    return obj


OBJECTIVES = Registry("objective", "flowzoo.objectives")
SCHEDULES = Registry("schedule", "flowzoo.schedules")
TIME_SAMPLERS = Registry("time_sampler", "flowzoo.time_samplers")
BACKBONES = Registry("backbone", "flowzoo.backbones")
SAMPLERS = Registry("sampler", "flowzoo.samplers")
DATASETS = Registry("dataset", "flowzoo.datasets")
METRICS = Registry("metric", "flowzoo.metrics")
BENCHMARKS = Registry("benchmark", "flowzoo.benchmarks")
# Parts of the unified objective that are small enough to swap on their own.
SHIFT_VELOCITIES = Registry("shift_velocity", "flowzoo.shift_velocities")
WEIGHTINGS = Registry("weighting", "flowzoo.weightings")
JVP_BACKENDS = Registry("jvp_backend", "flowzoo.jvp_backends")
# Experiment trackers a run's metrics, sample grids and config also go to (train.loggers).
LOGGERS = Registry("logger", "flowzoo.loggers")

ALL_REGISTRIES: dict[str, Registry] = {
    r.kind: r
    for r in (
        OBJECTIVES, SCHEDULES, TIME_SAMPLERS, BACKBONES, SAMPLERS, DATASETS, METRICS, BENCHMARKS,
        SHIFT_VELOCITIES, WEIGHTINGS, JVP_BACKENDS, LOGGERS,
    )
}


_builtins_loaded = False


def load_builtins() -> None:
    """Import the modules whose decorators fill the registries (once)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in (
        "flowzoo.objectives",
        "flowzoo.backbones",
        "flowzoo.samplers",
        "flowzoo.data",
        "flowzoo.eval",
        "flowzoo.bench.suites",
        "flowzoo.loggers",
    ):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a room not built yet must not hide the others
            if exc.name != module:
                raise
