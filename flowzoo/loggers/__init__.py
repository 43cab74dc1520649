"""Experiment trackers besides metrics.jsonl, registered in LOGGERS and named by ``train.loggers``.

    train: {loggers: [tensorboard]}                        # event files in the run directory
    train: {loggers: [{name: wandb, project: my-project}]}  # keys besides `name` go to the factory

The contract of a logger (a plugin registers one under the entry-point group "flowzoo.loggers"):

    logger = factory(run_dir=RUN, config=CFG, resume_step=STEP, **keys_from_the_config)
    logger.log_metrics({"train/loss": 0.41, "eval/meanflow@1/fd": 5.2}, step)   # scalars
    logger.log_image("samples/meanflow@1", Path("RUN/samples/....png"), step)  # a figure the run wrote
    logger.close(failed=False)

``config`` is the resolved run config (log it once); ``resume_step`` the step training continues from
(0 for a new run), so a tracker can drop what a killed run logged after its last checkpoint.

metrics.jsonl stays the record: ``Trackers`` calls the loggers on rank 0 only, after the line is written,
and a logger that raises (no network, a bad key, a missing package) warns once and is dropped while the
run goes on. Loggers open on the first record, so a run that fails before its first log step leaves no
tracker files behind.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

from flowzoo.registry import LOGGERS, RegistryError

from flowzoo.loggers import tensorboard, wandb  # noqa: F401  (register the built-ins; each imports its package lazily)

__all__ = ["LOGGERS", "LoggerWarning", "Trackers", "opened"]


class LoggerWarning(UserWarning):
    """A logger failed and was dropped; the run went on and metrics.jsonl has every number."""


def _spec(spec: Any) -> dict[str, Any]:
    if isinstance(spec, str):
        return {"name": spec}
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        return dict(spec)
    raise RegistryError(f"train.loggers takes logger names or mappings with a 'name' key (e.g. [tensorboard]), "
                        f"not {spec!r}.")


class Trackers:
    """The loggers of one run, fanned out: a no-op where ``enabled`` is false (ranks other than 0) or none is named.

    Names and arguments are checked at construction (an unknown one is a RegistryError, one sentence, before
    training); the loggers themselves are built on the first record."""

    def __init__(self, specs: Any, run_dir: str | Path, config: Mapping[str, Any] | None = None,
                 enabled: bool = True):
        specs = [specs] if isinstance(specs, (str, Mapping)) else list(specs or [])
        self.specs = [_spec(s) for s in specs]
        for spec in self.specs:
            factory = LOGGERS.get(spec["name"])
            args = {k: v for k, v in spec.items() if k != "name"}
            try:
                inspect.signature(factory).bind(run_dir=run_dir, config=config, resume_step=0, **args)
            except TypeError as exc:
                raise RegistryError(f"logger '{spec['name']}' got bad arguments ({exc}).") from None
            except ValueError:  # no signature to check
                pass
        self.run_dir, self.config = Path(run_dir), config
        self.enabled = enabled and bool(self.specs)
        self.resume_step = 0
        self.loggers: list[tuple[str, Any]] = []  # (name, logger) of those that started and have not failed
        self.failed: list[tuple[str, str]] = []  # (name, what went wrong), each warned once
        self._started = False

    def __enter__(self) -> "Trackers":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(failed=exc_type is not None)

    def resume(self, step: int) -> None:
        """Training continues from ``step`` (set before the first record; loggers then drop later stale points)."""
        if not self._started:
            self.resume_step = int(step)

    def _start(self) -> None:
        self._started = True
        for spec in self.specs:
            try:
                logger = LOGGERS.build(spec, run_dir=self.run_dir, config=self.config, resume_step=self.resume_step)
            except Exception as exc:  # noqa: BLE001  (a tracker must never stop the run)
                self._fail(spec["name"], None, "could not start", exc)
            else:
                self.loggers.append((spec["name"], logger))

    def _fail(self, name: str, logger: Any, what: str, exc: BaseException) -> None:
        why = f"{type(exc).__name__}: {exc}"
        self.failed.append((name, why))
        warnings.warn(f"flowzoo: logger '{name}' {what} ({why}); the run goes on without it, and metrics.jsonl "
                      f"keeps every number.", LoggerWarning, stacklevel=3)
        if logger is not None:
            self.loggers = [(n, other) for n, other in self.loggers if other is not logger]
            with contextlib.suppress(Exception):
                logger.close(failed=True)

    def _each(self, what: str, call) -> None:
        if not self.enabled:
            return
        if not self._started:
            self._start()
        for name, logger in list(self.loggers):
            try:
                call(logger)
            except Exception as exc:  # noqa: BLE001
                self._fail(name, logger, what, exc)

    def log_metrics(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """The numbers of ``values`` (``step`` itself, strings and booleans left out) as ``prefix + key``."""
        scalars = {prefix + k: float(v) for k, v in values.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if scalars:
            self._each("failed to log metrics", lambda logger: logger.log_metrics(scalars, int(step)))

    def log_images(self, images: Mapping[str, str | Path], step: int) -> None:
        """Figures the run wrote (PNG files), by tag."""
        for tag, path in images.items():
            if path is not None and Path(path).is_file():
                self._each("failed to log an image", lambda logger: logger.log_image(tag, Path(path), int(step)))

    def close(self, failed: bool = False) -> None:
        loggers, self.loggers = self.loggers, []
        for name, logger in loggers:
            try:
                logger.close(failed=failed)
            except Exception as exc:  # noqa: BLE001
                self._fail(name, None, "failed to close", exc)


@contextlib.contextmanager
def opened(trackers: Trackers | None, specs: Any, run_dir: str | Path, *, resume_step: int, enabled: bool,
           config: Mapping[str, Any] | None = None) -> Iterator[Trackers]:
    """``trackers`` as given (their owner closes them), else Trackers for ``specs`` closed at the end of the block."""
    if trackers is not None:
        trackers.resume(resume_step)
        yield trackers
        return
    with Trackers(specs, run_dir, config, enabled=enabled) as own:
        own.resume(resume_step)
        yield own

