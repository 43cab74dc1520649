"""Which records ran a config their suite no longer asks for: a preset's defaults changed after they were made.

A record keeps the config it ran (and its hash), so its numbers stay true of that config; but a table row
named after a preset reads as the preset's current defaults. `stale_note` says, for one suite table, which
methods' records are from an earlier config, so the page never passes them off as the current preset's.
`flowzoo bench SUITE` reports the same cells as "stale" and re-runs them once the records are moved away.
"""

from __future__ import annotations

from pathlib import Path

from flowzoo.leaderboard.aggregate import Group


def stale_records(group: Group, suite) -> dict[str, list[int]]:
    """{method: [seeds]} of the group's records whose config hash differs from what ``suite`` asks for now."""
    from flowzoo.bench.suite import Cell
    from flowzoo.config import ConfigError, config_hash
    from flowzoo.registry import RegistryError

    methods = {m.name: m for m in suite.methods}
    expected: dict[tuple[str, str], str | None] = {}  # (method, data) -> hash; seeds differ only in `seed`
    stale: dict[str, list[int]] = {}
    for r in group.records:
        method = methods.get(r["method"])
        data = next((d for d in suite.data if d == r["data"] or d.replace(":", "-") == r["data"]), None)
        if method is None or data is None:
            continue  # a record of a method or data set the suite no longer has: not this note's business
        try:
            cfg = Cell(suite, method, data, r["seed"]).resolved_config(Path("."))
        except (ConfigError, RegistryError, ValueError):
            continue  # the suite cannot be resolved here (e.g. a plugin is not installed): say nothing
        if config_hash(cfg) != r["config_hash"]:
            stale.setdefault(r["method"], []).append(r["seed"])
    return {m: sorted(s) for m, s in stale.items()}


def stale_note(group: Group, suite) -> str | None:
    """One sentence naming the methods whose records ran an earlier config than the suite's, or None."""
    if suite is None:
        return None
    stale = stale_records(group, suite)
    if not stale:
        return None
    which = ", ".join(f"{m} (seeds {', '.join(map(str, s))})" for m, s in sorted(stale.items()))
    return (f"Earlier configs: {which} ran a config this suite no longer asks for (the preset's defaults "
            f"changed since); their numbers hold for the config in their records, not for the current preset. "
            f"`flowzoo bench {group.benchmark}` re-runs them once those records are moved away.")
