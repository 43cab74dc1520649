"""`flowzoo bench SUITE`: run a suite's grid, one `flowzoo run` subprocess per cell, and write its records.

A cell is skipped when leaderboard/results/ already holds a valid record with the config the suite asks
for; a finished run directory without a record just gets its record written. A cell whose record or run
directory holds a *different* config (the suite changed) is never overwritten: it is reported with the
paths to move away. Each cell runs as its own process (a crash or a kill loses at most that cell, and
re-running the command resumes it from its last checkpoint); --jobs runs several at once.

A cell that another suite has already trained (a clean record under the same results root with the same
data, seed and config hash: e.g. the zoo's alpha-Flow, MeanFlow and flow-matching cells are the digits
suite's) is not trained again: its record is copied under this suite with ``reused_from`` naming the
source. The config hash covers everything the run trains and evaluates with (not where it writes), so
the copy is the record that training would produce, on the same hardware: a source record that names its
CPU model and torch CPU kernel set is reused only when they are the ones this suite's cells run with; one
from before records carried the hardware keeps saying "hardware not recorded" in its copy, and is never
reused by a suite that sets its own kernel set (``cpu_capability``), which must train its cells.

Every record says which budget its suite held equal (``compute.budget``: equal steps, or equal estimated
FLOPs with the step count and its arithmetic, see flowzoo/bench/budget.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flowzoo.bench.launch import Launch
from flowzoo.bench.suite import Cell, Suite
from flowzoo.config import config_hash
from flowzoo.leaderboard.from_run import record_from_run
from flowzoo.leaderboard.record import RecordError, is_dirty, read_record, write_record

DEFAULT_RUNS = Path("runs/bench")
DEFAULT_RESULTS = Path("leaderboard/results")


@dataclass
class GridReport:
    done: list[str] = field(default_factory=list)  # trained now
    recorded: list[str] = field(default_factory=list)  # finished runs that only needed their record
    skipped: list[str] = field(default_factory=list)  # already had a valid record
    reused: list[str] = field(default_factory=list)  # copied from another suite's record of the same training
    stale: list[str] = field(default_factory=list)  # one sentence each: what to move away
    failed: list[str] = field(default_factory=list)  # one sentence each, with the log's path

    @property
    def ok(self) -> bool:
        return not self.failed and not self.stale


def record_path(cell: Cell, results_root: Path) -> Path:
    return Path(results_root) / f"{cell.key}.json"


def log_path(cell: Cell, runs_root: Path) -> Path:
    run_dir = cell.run_dir(runs_root)
    return run_dir.parent / f"{run_dir.name}.log"


def cell_state(cell: Cell, runs_root: Path, results_root: Path, allow_dirty: bool = False) -> tuple[str, str]:
    """("skip" | "record" | "run" | "stale", why) for one cell.

    Records and runs from a dirty tree count as valid only with ``allow_dirty`` (iterating on uncommitted
    code); they stay marked dirty, and the leaderboard still leaves them out unless asked."""
    dirty = (lambda record: False) if allow_dirty else is_dirty
    expected = config_hash(cell.resolved_config(runs_root))
    path = record_path(cell, results_root)
    if path.exists():
        try:
            record = read_record(path)
        except RecordError:
            record = None  # set aside when the new record is written (write_cell_record), never deleted
        if record is not None and record["config_hash"] == expected and not dirty(record):
            return "skip", "valid record"
        if record is not None and not dirty(record):  # a dirty record is re-run (and set aside), never ranked
            return "stale", f"{path} holds a result for a different config than the suite now asks for; move it away to re-run"
    run_dir = cell.run_dir(runs_root)
    result = run_dir / "result.json"
    if result.is_file():
        try:
            prov = json.loads(result.read_text())["provenance"]
            prov_hash = prov["config_hash"]
        except (ValueError, KeyError, TypeError):
            return "run", "unreadable result.json; the run is resumed"
        if prov_hash == expected and prov.get("dirty") is True and not allow_dirty:
            return "stale", f"{run_dir} was trained from a dirty tree (uncommitted changes); move it away to re-run from a commit"
        if prov_hash == expected:
            return "record", "finished run"
        return "stale", f"{run_dir} holds a run of a different config; move it away to re-run"
    source = reusable_record(cell, results_root, expected)
    if source is not None:
        return "reuse", str(source)
    return "run", "no result yet"


def expected_hardware(cell: Cell) -> dict:
    """The CPU model and kernel set this cell's run will record (the suite's cpu_capability, else this process's)."""
    from flowzoo.pipeline.provenance import cpu_capability, cpu_id, cpu_model

    capability = cell.suite.cpu_capability.upper() if cell.suite.cpu_capability else cpu_capability()
    return {"cpu_model": cpu_model(), "cpu_id": cpu_id(), "cpu_capability": capability}


def same_hardware(record: dict, expected: dict, forced: bool) -> bool:
    """Whether a record's run used the hardware expected (``forced``: the suite sets the kernel set, so a
    record that does not name its own cannot stand in)."""
    hw = record.get("hardware")
    if not isinstance(hw, dict):
        return not forced
    return all(hw.get(k) == v for k, v in expected.items())


def reusable_record(cell: Cell, results_root: Path, expected_hash: str) -> Path | None:
    """Another suite's clean record of this very training (same data, seed and config hash, on the hardware
    this cell would run on), if any."""
    expected = expected_hardware(cell)
    suite, data, name = cell.key.split("/")
    for path in sorted(Path(results_root).glob(f"*/{data}/*-s{cell.seed}.json")):
        if path.parent.parent.name == suite:
            continue
        try:
            record = read_record(path)
        except RecordError:
            continue
        if (record["config_hash"] == expected_hash and record["seed"] == cell.seed and not is_dirty(record)
                and same_hardware(record, expected, forced=bool(cell.suite.cpu_capability))):
            return path
    return None


def write_reused_record(cell: Cell, source: Path, runs_root: Path, results_root: Path, launch: Launch | None = None) -> Path:
    """The source record under this cell's name, saying where it came from (never a new measurement)."""
    record = read_record(source)
    record.update(benchmark=cell.suite.name, method=cell.method.name, command=cell.command(runs_root, launch),
                  reused_from=str(Path(source).relative_to(results_root)))
    record["compute"]["budget"] = cell.budget()
    return write_record(record_path(cell, results_root), record)


def write_cell_record(cell: Cell, runs_root: Path, results_root: Path, launch: Launch | None = None) -> Path:
    path = record_path(cell, results_root)
    if path.exists():  # an invalid or dirty record is kept beside the new one, never deleted
        path.replace(path.with_suffix(f".invalid-{int(time.time())}"))
    record = record_from_run(cell.run_dir(runs_root), benchmark=cell.suite.name, method=cell.method.name,
                             command=cell.command(runs_root, launch))
    record["compute"]["budget"] = cell.budget()
    return write_record(path, record)


def run_grid(suite: Suite, *, runs_root: Path = DEFAULT_RUNS, results_root: Path = DEFAULT_RESULTS, jobs: int = 1,
             threads: int | None = None, seeds: list[int] | None = None, console: Console | None = None,
             allow_dirty: bool = False, launch: Launch | None = None) -> GridReport:
    """``launch``: torchrun (bench/launch.py); on a node other than 0 cells train but write no records."""
    if jobs < 1:  # no cell would ever start, and the loop below would wait for one forever
        raise ValueError(f"jobs must be at least 1 (cells trained at once), not {jobs}.")
    console = console or Console()
    launch = launch or Launch()
    if not launch.writes_records:
        console.print(f"node {launch.node_rank} of {launch.nnodes}: training the cells with node 0, which writes the records.")
    cells = [c for c in suite.cells() if seeds is None or c.seed in seeds]
    report = GridReport()
    todo: list[Cell] = []
    for cell in cells:
        state, why = cell_state(cell, runs_root, results_root, allow_dirty)
        if state == "skip":
            report.skipped.append(cell.key)
        elif state == "stale":
            report.stale.append(why)
        elif state == "record":
            if launch.writes_records:
                write_cell_record(cell, runs_root, results_root, launch)
            report.recorded.append(cell.key)
        elif state == "reuse":
            if launch.writes_records:
                write_reused_record(cell, Path(why), runs_root, results_root, launch)
            report.reused.append(cell.key)
        else:
            todo.append(cell)
    reused = f"{len(report.reused)} copied from another suite's identical run, " if report.reused else ""
    console.print(f"{suite.name}: {len(cells)} cells; {len(report.skipped)} have valid records, "
                  f"{len(report.recorded)} finished runs recorded, {reused}{len(todo)} to run, {len(report.stale)} stale.")

    threads = threads or max(1, (os.cpu_count() or 1) // max(jobs, 1))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if suite.cpu_capability:  # torch reads it at start-up: each cell's process gets it from its environment
        env["ATEN_CPU_CAPABILITY"] = suite.cpu_capability
    running: list[tuple[Cell, subprocess.Popen, float]] = []
    queue = list(todo)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"{suite.name} grid", total=len(cells),
                                 completed=len(report.skipped) + len(report.recorded) + len(report.reused))
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    cell = queue.pop(0)
                    log = log_path(cell, runs_root)
                    log.parent.mkdir(parents=True, exist_ok=True)
                    cmd = launch.argv(cell.run_args(runs_root))
                    with open(log, "ab") as handle:
                        running.append((cell, subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env),
                                        time.monotonic()))
                progress.update(task, description=f"{suite.name}: " + ", ".join(c.key.split('/', 1)[1] for c, _, _ in running))
                time.sleep(0.5)
                for item in list(running):
                    cell, proc, started = item
                    if proc.poll() is None:
                        continue
                    running.remove(item)
                    progress.advance(task)
                    log = log_path(cell, runs_root)
                    if proc.returncode != 0:
                        report.failed.append(f"{cell.key} exited with code {proc.returncode}; see {log}")
                        progress.console.print(f"[red]failed[/red] {cell.key} (see {log})")
                        continue
                    try:
                        if launch.writes_records:
                            write_cell_record(cell, runs_root, results_root, launch)
                    except RecordError as exc:
                        report.failed.append(f"{cell.key}: {exc}")
                        continue
                    report.done.append(cell.key)
                    progress.console.print(f"done {cell.key} in {time.monotonic() - started:.0f} s")
        except KeyboardInterrupt:
            for _, proc, _ in running:  # each run keeps its last checkpoint; the same command resumes
                proc.terminate()
            raise
    for line in report.stale + report.failed:
        console.print(f"[yellow]{line}[/yellow]")
    return report
