"""Table contents shared by the Markdown and HTML pages: headers and cells as plain strings.

A cell is "mean ± std" over seeds; `bold` marks the best mean per NFE (per column) within one group.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowzoo.leaderboard.aggregate import Group, mean_std
from flowzoo.leaderboard.reported import MARK, ReportedSection


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]]  # (row, column) cells to emphasise


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def mean_pm_std(values: list[float]) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    return fmt(mean) if len(values) == 1 else f"{fmt(mean)} ± {fmt(std)}"


def method_label(row) -> str:
    schedule = f", {row.schedule}" if row.schedule else ""
    return f"{row.method} ({row.preset}{schedule})" if row.method != row.preset else row.method


def ranking_table(group: Group) -> Table:
    """Rank metric at each NFE (mean ± std), at the lowest NFE seed by seed (outliers show), and the three
    measures of training compute."""
    nfes = group.nfes
    headers = ["method", "sampler", "seeds"] + [f"{group.rank_metric} @ {n} NFE" for n in nfes]
    headers += [f"{group.rank_metric} @ {nfes[0]} NFE per seed", "steps", "images seen", "train wall time (s)"]
    rows, bold = [], set()
    for i, row in enumerate(group.rows):
        cells = [method_label(row), row.sampler, ",".join(str(s) for s in row.seeds)]
        for j, nfe in enumerate(nfes):
            cells.append(mean_pm_std(row.values(nfe, group.rank_metric)))
            if group.best(nfe) == row.method:
                bold.add((i, 3 + j))
        per_seed = [v for _, v in sorted(row.seed_values(nfes[0], group.rank_metric))]
        steps, images = row.compute("steps"), row.compute("images_seen")
        cells += [" / ".join(fmt(v) for v in per_seed) or "–",
                  f"{mean_std(steps)[0]:,.0f}" if steps else "–", f"{mean_std(images)[0]:,.0f}" if images else "–",
                  mean_pm_std(row.compute("wall_time_s"))]
        rows.append(cells)
    return Table(headers, rows, bold)


def detail_table(group: Group, nfe: int = 1) -> Table:
    """Every metric at one NFE (higher-is-better metrics are not bolded: the rank metric decides)."""
    metrics = group.metrics
    headers = ["method"] + metrics
    rows, bold = [], set()
    for i, row in enumerate(group.rows):
        rows.append([method_label(row)] + [mean_pm_std(row.values(nfe, m)) for m in metrics])
        if group.best(nfe) == row.method and group.rank_metric in metrics:
            bold.add((i, 1 + metrics.index(group.rank_metric)))
    return Table(headers, rows, bold)


def reference_line(group: Group) -> str:
    """The floors next to which the numbers are read (e.g. held-out FD), from the first record."""
    ref = group.rows[0].records[0].get("reference", {})
    keys = [k for k in ref if k.split("/", 1)[-1] == group.rank_metric]
    return ", ".join(f"{k} = {fmt(float(ref[k]))}" for k in keys)


def reported_table(section: ReportedSection) -> Table:
    extra = [k for k in ("model", "epochs") if any(k in r for r in section.rows)]
    headers = ["method"] + extra + list(section.columns.values()) + ["source", "status"]
    rows = []
    for r in section.rows:
        cells = [str(r["method"])] + [str(r.get(k, "")) for k in extra]
        cells += [fmt(float(r[c])) if r.get(c) is not None else "–" for c in section.columns]
        cells += [str(r["source"]) + (f"; {r['protocol']}" if r.get("protocol") else ""), MARK]
        rows.append(cells)
    return Table(headers, rows, set())
