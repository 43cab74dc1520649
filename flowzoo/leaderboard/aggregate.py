"""Records -> comparison groups: one group per (benchmark, data, evaluation protocol), rows x NFE cells.

Only records with the same protocol (`record.protocol_id`) share a group, so numbers measured against
different reference statistics or feature extractors are never ranked against each other. A row is one
(method, sampler): a run evaluated with two samplers gives two rows, so numbers from different samplers
are never pooled into one mean, and a seed has exactly one value per row and NFE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from flowzoo.leaderboard.record import protocol_id

# The metric a table ranks by when the suite names none, by metric family (the protocol's metric names).
DEFAULT_RANK = {"digits": ("fd", True), "toy2d": ("swd", True), "imagenet_fid": ("fid", True), "fvd": ("fvd", True)}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


@dataclass
class MethodRow:
    method: str
    preset: str
    schedule: str | None
    sampler: str
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted(r["seed"] for r in self.records)

    def evaluations(self, record: dict[str, Any], nfe: int, metric: str) -> list[dict[str, Any]]:
        """This row's evaluations in one record at one NFE: its own sampler's only."""
        return [ev for ev in record["evaluations"]
                if ev["sampler"] == self.sampler and ev["nfe"] == nfe and metric in ev["metrics"]]

    def values(self, nfe: int, metric: str) -> list[float]:
        """The metric at this NFE over seeds, with this row's sampler."""
        return [value for _, value in self.seed_values(nfe, metric)]

    def seed_values(self, nfe: int, metric: str) -> list[tuple[int, float]]:
        return [(r["seed"], float(ev["metrics"][metric])) for r in self.records for ev in self.evaluations(r, nfe, metric)]

    def by_seed(self, nfe: int, metric: str) -> dict[int, float]:
        return dict(self.seed_values(nfe, metric))

    def collapsed(self, nfe: int, metric: str, reference: str, multiple: float, lower_is_better: bool = True) -> tuple[int, int]:
        """(runs worse than `multiple` x their own record's reference point, runs that have that point)."""
        from flowzoo.leaderboard.stats import collapsed

        count = total = 0
        for r in self.records:
            ref = r.get("reference", {}).get(reference)
            values = [float(ev["metrics"][metric]) for ev in self.evaluations(r, nfe, metric)]
            if ref is None or not values:
                continue
            total += len(values)
            count += collapsed(values, multiple * float(ref), lower_is_better)
        return count, total

    @property
    def dirty_seeds(self) -> list[int]:
        return sorted(r["seed"] for r in self.records if r["code"].get("dirty"))

    def compute(self, key: str) -> list[float]:
        return [float(r["compute"][key]) for r in self.records if r["compute"].get(key) is not None]

    @property
    def command(self) -> str:
        return self.records[0]["command"]


@dataclass
class Group:
    benchmark: str
    data: str
    protocol: str  # protocol_id
    protocol_detail: dict[str, Any]
    rank_metric: str
    lower_is_better: bool
    rows: list[MethodRow]
    reference_method: str | None = None  # paired comparisons are to this method's first row (None: the first row)
    collapse: Any = None  # flowzoo.bench.suite.Collapse or None

    @property
    def records(self) -> list[dict[str, Any]]:
        """Each record once, in row order (a record evaluated with two samplers sits in two rows)."""
        return list({id(r): r for row in self.rows for r in row.records}.values())

    @property
    def reference_row(self) -> MethodRow:
        return next((r for r in self.rows if r.method == self.reference_method), self.rows[0])

    @property
    def nfes(self) -> list[int]:
        return sorted({ev["nfe"] for row in self.rows for r in row.records for ev in r["evaluations"]
                       if ev["sampler"] == row.sampler})

    @property
    def metrics(self) -> list[str]:
        return sorted({m for row in self.rows for r in row.records for ev in r["evaluations"] for m in ev["metrics"]})

    def best(self, nfe: int, metric: str | None = None) -> MethodRow | None:
        """The row with the best mean at this NFE (ties: the first in row order). A row with a non-finite
        value is never best: those runs are invalid records or collapsed."""
        metric = metric or self.rank_metric
        scored = [(mean_std(v)[0], i) for i, row in enumerate(self.rows)
                  if (v := row.values(nfe, metric)) and all(math.isfinite(x) for x in v)]
        if not scored:
            return None
        lower = self.lower_is_better if metric == self.rank_metric else True
        return self.rows[(min if lower else max)(scored, key=lambda s: s[0])[1]]


def rank_metric_for(protocol: dict[str, Any], suite_rank: dict[str, Any] | None) -> tuple[str, bool]:
    families = list(protocol.get("metrics", {}))
    for family in families:
        if suite_rank and family in suite_rank:
            r = suite_rank[family]
            return r.metric, r.lower_is_better
    for family in families:
        if family in DEFAULT_RANK:
            return DEFAULT_RANK[family]
    return "", True


def group_records(records: list[dict[str, Any]], suite_ranks: dict[str, dict] | None = None,
                  suites: dict[str, Any] | None = None) -> list[Group]:
    """Groups in a stable order (benchmark, data, protocol); rows in the suite's method order (else the
    order methods first appear). `suites` ({benchmark: Suite}) gives each group its reference method and
    collapse rule."""
    suite_ranks = suite_ranks or {}
    suites = suites or {}
    groups: dict[tuple[str, str, str], Group] = {}
    for record in sorted(records, key=lambda r: (r["benchmark"], r["data"], r["seed"])):
        pid = protocol_id(record)
        key = (record["benchmark"], record["data"], pid)
        if key not in groups:
            metric, lower = rank_metric_for(record["protocol"], suite_ranks.get(record["benchmark"]))
            suite = suites.get(record["benchmark"])
            groups[key] = Group(record["benchmark"], record["data"], pid, record["protocol"], metric, lower, [],
                                getattr(suite, "reference_method", None), getattr(suite, "collapse", None))
        group = groups[key]
        for sampler in dict.fromkeys(ev["sampler"] for ev in record["evaluations"]):
            row = next((r for r in group.rows if (r.method, r.sampler) == (record["method"], sampler)), None)
            if row is None:
                row = MethodRow(record["method"], record["preset"], record["schedule"], sampler)
                group.rows.append(row)
            row.records.append(record)
    for (benchmark, _, _), group in groups.items():
        order = [m.name for m in getattr(suites.get(benchmark), "methods", [])]
        group.rows.sort(key=lambda row: order.index(row.method) if row.method in order else len(order))
    return [groups[k] for k in sorted(groups)]


def curve_mean(row: MethodRow, metric: str, axis: str) -> tuple[list[float], list[float], list[float]]:
    """The 1-NFE training curve averaged over seeds at the steps every seed has: (x, mean, std)."""
    per_seed = [{c["step"]: c for c in r.get("curve", []) if metric in c["metrics"]} for r in row.records]
    if not per_seed or not all(per_seed):
        return [], [], []
    steps = sorted(set.intersection(*(set(p) for p in per_seed)))
    xs, means, stds = [], [], []
    for step in steps:
        m, s = mean_std([float(p[step]["metrics"][metric]) for p in per_seed])
        xs.append(mean_std([float(p[step][axis]) for p in per_seed])[0])
        means.append(m)
        stds.append(s)
    return xs, means, stds
