"""Table contents shared by the Markdown and HTML pages: headers and cells as plain strings.

Ranking cells are "mean [95% bootstrap interval]" over seeds, detail cells "mean ± std"; `bold` marks the
best mean per NFE (per column) within one group. The comparison table holds each method's paired
difference to the group's reference method and its verdict (flowzoo.leaderboard.stats).
"""

from __future__ import annotations

from dataclasses import dataclass

from flowzoo.leaderboard.aggregate import Group, mean_std
from flowzoo.leaderboard.stats import bootstrap_ci, compare, median
from flowzoo.leaderboard.reported import MARK, ReportedSection


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]]  # (row, column) cells to emphasise


def decimals_for(value: float) -> int:
    """One format everywhere: three significant figures between 1 and 100, whole numbers above."""
    magnitude = abs(value)
    if magnitude >= 100:
        return 0
    if magnitude >= 10:
        return 1
    return 2 if magnitude >= 1 else 3


def fmt(value: float, decimals: int | None = None) -> str:
    return f"{value:.{decimals_for(value) if decimals is None else decimals}f}"


def mean_pm_std(values: list[float]) -> str:
    """"mean ± std", the std at the mean's decimals (so 1.00 ± 0.00, never 1 ± 1.36e-16)."""
    if not values:
        return "–"
    mean, std = mean_std(values)
    return fmt(mean) if len(values) == 1 else f"{fmt(mean)} ± {fmt(std, decimals_for(mean))}"


def with_interval(centre: float, interval: tuple[float, float], decimals: int | None = None) -> str:
    d = decimals_for(centre) if decimals is None else decimals
    return f"{fmt(centre, d)} [{fmt(interval[0], d)}, {fmt(interval[1], d)}]"


def mean_ci(values: list[float]) -> str:
    """"mean [95% bootstrap interval]" over seeds."""
    if not values:
        return "–"
    return with_interval(mean_std(values)[0], bootstrap_ci(values))


def method_label(row) -> str:
    schedule = f", {row.schedule}" if row.schedule else ""
    return f"{row.method} ({row.preset}{schedule})" if row.method != row.preset else row.method


def seeds_cell(row) -> str:
    """Seeds, a dirty tree's marked with * (they are in a table only with --allow-dirty)."""
    dirty = set(row.dirty_seeds)
    return ",".join(f"{s}*" if s in dirty else str(s) for s in row.seeds)


def collapse_header(group: Group) -> str | None:
    c = group.collapse
    if c is None:
        return None
    times = "" if c.multiple == 1 else f"{c.multiple:g} x "
    worse = ">" if group.lower_is_better else "<"
    return f"collapsed @ {group.nfes[0]} NFE ({group.rank_metric} {worse} {times}{c.reference})"


def passes_cell(row) -> str:
    passes = [r["compute"].get("passes_per_step") for r in row.records]
    if not passes or any(p is None for p in passes):
        return "–"
    p = passes[0]
    return f"{p.get('forward', 0):.2f} / {p.get('jvp', 0):.2f} / {p.get('backward', 0):.2f}"


def flops_cell(row) -> str:
    flops = row.compute("train_flops")
    return f"{mean_std(flops)[0]:.2e}" if flops else "–"


def ranking_table(group: Group) -> Table:
    """Rank metric at each NFE (mean and its 95% bootstrap interval over seeds), at the lowest NFE the
    median, the runs seed by seed and the collapse count, then training compute: steps, images seen,
    network passes per step, estimated FLOPs and wall time."""
    nfes, metric = group.nfes, group.rank_metric
    collapse = collapse_header(group)
    headers = ["method", "sampler", "seeds"] + [f"{metric} @ {n} NFE, mean [95% CI]" for n in nfes]
    headers += [f"median @ {nfes[0]} NFE", f"{metric} @ {nfes[0]} NFE per seed"] + ([collapse] if collapse else [])
    headers += ["steps", "images seen", "passes/step (fwd / jvp / bwd)", "train FLOPs (est.)", "train wall time (s)"]
    on_gpu = any(r["compute"].get("gpu_hours") is not None for row in group.rows for r in row.records)
    headers += ["GPU-hours (train wall x GPUs)"] if on_gpu else []
    rows, bold = [], set()
    for i, row in enumerate(group.rows):
        cells = [method_label(row), row.sampler, seeds_cell(row)]
        for j, nfe in enumerate(nfes):
            cells.append(mean_ci(row.values(nfe, metric)))
            if group.best(nfe) == row.method:
                bold.add((i, 3 + j))
        lowest = row.values(nfes[0], metric)
        per_seed = [v for _, v in sorted(row.seed_values(nfes[0], metric))]
        cells += [fmt(median(lowest)) if lowest else "–", " / ".join(fmt(v) for v in per_seed) or "–"]
        if collapse:
            count, total = row.collapsed(nfes[0], metric, group.collapse.reference, group.collapse.multiple, group.lower_is_better)
            cells.append(f"{count}/{total}" if total else "–")
        steps, images = row.compute("steps"), row.compute("images_seen")
        cells += [f"{mean_std(steps)[0]:,.0f}" if steps else "–", f"{mean_std(images)[0]:,.0f}" if images else "–",
                  passes_cell(row), flops_cell(row), mean_pm_std(row.compute("wall_time_s"))]
        if on_gpu:
            cells.append(mean_pm_std(row.compute("gpu_hours")))
        rows.append(cells)
    return Table(headers, rows, bold)


def comparison_table(group: Group) -> Table | None:
    """Each method minus the reference method on paired seeds, per NFE: the mean difference, its 95%
    bootstrap interval, and the verdict (flowzoo.leaderboard.stats.compare)."""
    if len(group.rows) < 2:
        return None
    ref, metric = group.reference_row, group.rank_metric
    headers = ["method", "paired seeds"]
    for n in group.nfes:
        headers += [f"Δ {metric} @ {n} NFE vs {ref.method}, mean [95% CI]", f"verdict @ {n} NFE"]
    rows, bold = [], set()
    for row in group.rows:
        if row is ref:
            continue
        cells, n_paired = [method_label(row)], 0
        for nfe in group.nfes:
            c = compare(row.by_seed(nfe, metric), ref.by_seed(nfe, metric), group.lower_is_better)
            if c is None:
                cells += ["–", "–"]
                continue
            n_paired = max(n_paired, c.n)
            d = max(decimals_for(c.interval[0]), decimals_for(c.interval[1]), decimals_for(c.mean_difference))
            cells += [with_interval(c.mean_difference, c.interval, d), c.verdict]
        rows.append(cells[:1] + [str(n_paired)] + cells[1:])
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
