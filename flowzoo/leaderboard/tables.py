"""Table contents shared by the Markdown and HTML pages: headers and cells as plain strings.

Ranking cells are "mean [95% Student-t interval]" over seeds, detail cells "mean ± std"; `bold` marks the
best mean per NFE (per column) within one group. The comparison table holds each row's paired
difference to the group's reference row and its verdict, Holm-controlled across the table
(flowzoo.leaderboard.stats); an unresolved verdict says how small a difference the seeds could resolve.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowzoo.leaderboard.aggregate import Group, mean_std
import math

from flowzoo.leaderboard.stats import MAX_SEEDS_NEEDED, Comparison, compare_all, median, t_interval
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
    if not math.isfinite(value):
        return str(value)  # nan, inf, -inf: never formatted as a number
    return f"{value:.{decimals_for(value) if decimals is None else decimals}f}"


def mean_pm_std(values: list[float]) -> str:
    """"mean ± std", the std at the mean's decimals (so 1.00 ± 0.00, never 1 ± 1.36e-16)."""
    if not values:
        return "–"
    mean, std = mean_std(values)
    return fmt(mean) if len(values) == 1 else f"{fmt(mean)} ± {fmt(std, decimals_for(mean))}"


def with_interval(centre: float, interval: tuple[float, float], decimals: int | None = None) -> str:
    """"centre [lo, hi]"; only the centre where there is no finite interval (one seed, a non-finite value)."""
    d = decimals_for(centre) if decimals is None or not math.isfinite(centre) else decimals
    if not all(math.isfinite(x) for x in (centre, *interval)):
        return fmt(centre, d)
    return f"{fmt(centre, d)} [{fmt(interval[0], d)}, {fmt(interval[1], d)}]"


def mean_ci(values: list[float]) -> str:
    """"mean [95% Student-t interval]" over seeds."""
    if not values:
        return "–"
    return with_interval(mean_std(values)[0], t_interval(values))


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
    """Rank metric at each NFE (mean and its 95% Student-t interval over seeds), at the lowest NFE the
    median, the runs seed by seed and the collapse count, then training compute: steps, images seen,
    network passes per step, estimated FLOPs and wall time."""
    nfes, metric = group.nfes, group.rank_metric
    collapse = collapse_header(group)
    headers = ["method", "sampler", "seeds"] + [f"{metric} @ {n} NFE, mean [95% t-CI]" for n in nfes]
    headers += [f"median @ {nfes[0]} NFE", f"{metric} @ {nfes[0]} NFE per seed"] + ([collapse] if collapse else [])
    headers += ["steps", "images seen", "passes/step (fwd / jvp / bwd)", "train FLOPs (est.)", "train wall time (s)"]
    on_gpu = any(r["compute"].get("gpu_hours") is not None for row in group.rows for r in row.records)
    headers += ["GPU-hours (train wall x GPUs)"] if on_gpu else []
    rows, bold = [], set()
    for i, row in enumerate(group.rows):
        cells = [row_label(row, group), row.sampler, seeds_cell(row)]
        for j, nfe in enumerate(nfes):
            cells.append(mean_ci(row.values(nfe, metric)))
            if group.best(nfe) is row:
                bold.add((i, 3 + j))
        lowest = row.values(nfes[0], metric)
        per_seed = [v for _, v in sorted(row.seed_values(nfes[0], metric))]
        cells += [fmt(median(lowest)) if lowest else "–", " / ".join(fmt(v) for v in per_seed) or "–"]
        if collapse and not group.collapse.judges(row.sampler):
            cells.append(f"n/a ({row.sampler}: not judged)")
        elif collapse:
            count, total = row.collapsed(nfes[0], metric, group.collapse.reference, group.collapse.multiple, group.lower_is_better)
            cells.append(f"{count}/{total}" if total else "–")
        steps, images = row.compute("steps"), row.compute("images_seen")
        cells += [f"{mean_std(steps)[0]:,.0f}" if steps else "–", f"{mean_std(images)[0]:,.0f}" if images else "–",
                  passes_cell(row), flops_cell(row), mean_pm_std(row.compute("wall_time_s"))]
        if on_gpu:
            cells.append(mean_pm_std(row.compute("gpu_hours")))
        rows.append(cells)
    return Table(headers, rows, bold)


def row_label(row, group: Group) -> str:
    """The method, and its sampler where the group has another row of the same method."""
    label = method_label(row)
    if sum(r.method == row.method for r in group.rows) > 1:
        label += f" [{row.sampler}]"
    return label


def comparisons(group: Group) -> dict[tuple[int, int], Comparison]:
    """{(row index, NFE): Comparison} against the reference row, Holm-controlled over the whole table."""
    ref, metric = group.reference_row, group.rank_metric
    cells = {(i, nfe): (row.by_seed(nfe, metric), ref.by_seed(nfe, metric))
             for i, row in enumerate(group.rows) if row is not ref for nfe in group.nfes}
    return compare_all(cells, group.lower_is_better)


def comparisons_count(group: Group) -> int:
    """Holm's m for this table: the comparisons with enough paired seeds to be tested."""
    return next((c.tests for c in comparisons(group).values()), 0)


def verdict_cell(c: Comparison) -> str:
    """The verdict; unresolved, with the smallest difference these seeds could resolve and the seeds the
    observed difference would need at the observed spread."""
    if not c.verdict.startswith("not resolved") or not math.isfinite(c.resolvable):
        return c.verdict
    needed = "" if c.seeds_needed is None else (
        f"; ~{c.seeds_needed} seeds for this Δ" if c.seeds_needed <= MAX_SEEDS_NEEDED else f"; >{MAX_SEEDS_NEEDED} seeds for this Δ")
    return f"{c.verdict} (resolvable: |Δ| ≥ {fmt(c.resolvable)}{needed})"


def comparison_table(group: Group) -> Table | None:
    """Each row minus the reference row on paired seeds, per NFE: the mean difference, its 95% Student-t
    interval, and the verdict (Holm-Bonferroni over the table's comparisons; flowzoo.leaderboard.stats)."""
    if len(group.rows) < 2:
        return None
    ref, metric = group.reference_row, group.rank_metric
    table_comparisons = comparisons(group)
    headers = ["method", "paired seeds"]
    for n in group.nfes:
        headers += [f"Δ {metric} @ {n} NFE vs {row_label(ref, group)}, mean [95% t-CI]", f"verdict @ {n} NFE"]
    rows, bold = [], set()
    for i, row in enumerate(group.rows):
        if row is ref:
            continue
        cells, n_paired = [row_label(row, group)], 0
        for nfe in group.nfes:
            c = table_comparisons.get((i, nfe))
            if c is None:
                cells += ["–", "–"]
                continue
            n_paired = max(n_paired, c.n)
            # Decimals from the interval's half-width (three figures of the uncertainty), else from the mean.
            half = (c.interval[1] - c.interval[0]) / 2
            d = decimals_for(half) if math.isfinite(half) and half > 0 else None
            cells += [with_interval(c.mean_difference, c.interval, d), verdict_cell(c)]
        rows.append(cells[:1] + [str(n_paired)] + cells[1:])
    return Table(headers, rows, bold)


def detail_table(group: Group, nfe: int = 1) -> Table:
    """Every metric at one NFE (higher-is-better metrics are not bolded: the rank metric decides)."""
    metrics = group.metrics
    headers = ["method"] + metrics
    rows, bold = [], set()
    for i, row in enumerate(group.rows):
        rows.append([row_label(row, group)] + [mean_pm_std(row.values(nfe, m)) for m in metrics])
        if group.best(nfe) is row and group.rank_metric in metrics:
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
