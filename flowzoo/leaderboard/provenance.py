"""What a reader needs to trust a table: which commits, package versions and devices its records came from.

`provenance_line` summarises a group (each distinct value with how many records have it); the details
table lists every record, so a single number can be traced to the commit that re-runs it.
"""

from __future__ import annotations

from collections import Counter

from flowzoo.leaderboard.aggregate import Group
from flowzoo.leaderboard.record import is_dirty
from flowzoo.leaderboard.tables import Table

VERSION_KEYS = ("flowzoo", "torch", "python", "numpy")


def _counted(values: list[str]) -> str:
    counts = Counter(values)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{value} ({n})" for value, n in sorted(counts.items()))


def _commit(record: dict) -> str:
    commit = record["code"].get("commit")
    short = commit[:8] if commit else "unknown commit"
    return f"{short}*" if is_dirty(record) else short


def _versions(record: dict) -> str:
    v = record.get("versions", {})
    return ", ".join(f"{k} {v[k]}" for k in VERSION_KEYS if v.get(k))


def provenance_line(group: Group) -> str:
    records = [r for row in group.rows for r in row.records]
    finished = sorted(r["finished"] for r in records if r.get("finished"))
    dates = (f"finished {finished[0][:16].replace('T', ' ')} to {finished[-1][:16].replace('T', ' ')} UTC"
             + ("" if len(finished) == len(records) else f" ({len(records) - len(finished)} records without a date)")
             if finished else "finish dates not recorded")
    dirty = sum(is_dirty(r) for r in records)
    parts = [f"{len(records)} records", f"commit {_counted([_commit(r) for r in records])}",
             _counted([_versions(r) for r in records]), f"device {_counted([str(r['compute'].get('device')) for r in records])}",
             dates]
    if dirty:
        parts.append(f"{dirty} from dirty trees (marked *, not reproducible from their commit)")
    return "; ".join(parts)


def provenance_details(group: Group) -> Table:
    headers = ["method", "seed", "commit", "versions", "device", "finished", "train wall time (s)", "command"]
    rows = []
    for row in group.rows:
        for r in sorted(row.records, key=lambda r: r["seed"]):
            rows.append([row.method, str(r["seed"]), _commit(r), _versions(r), str(r["compute"].get("device")),
                         r.get("finished", "–"), f"{r['compute']['wall_time_s']:.0f}", r["command"]])
    return Table(headers, rows, set())
