"""The leaderboard's first table: one row per method, one column per suite table and NFE.

Each cell is that table's headline (rank) metric for the method, the mean over seeds with its 95% Student-t
interval, and a mark where the paired comparison to the table's reference row is resolved: the very
comparisons the suite's own table shows (tables.comparisons: Holm-controlled over that table), so the
overview never claims more than the tables do. Numbers compare only down a column: each column is its own
suite, data and evaluation protocol.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

from flowzoo.leaderboard.aggregate import Group, MethodRow, mean_std
from flowzoo.leaderboard.stats import MULTIPLICITY, t_interval
from flowzoo.leaderboard.tables import Table, comparisons, fmt, method_label, with_interval


@dataclass
class Column:
    benchmark: str
    group: Group
    nfe: int
    title: str  # the table: "digits", or "toy:8gaussians" where a suite has several
    anchor: str  # the id of the table's heading on the page


@dataclass
class Cell:
    mean: float
    interval: tuple[float, float]
    seeds: int
    mark: str  # "ref" (the table's reference row), "better", "worse", or "" (not resolved, or not compared)
    best: bool  # the best mean of its column (the suite table's bold)

    @property
    def text(self) -> str:
        return with_interval(self.mean, self.interval)


@dataclass
class OverviewRow:
    label: str  # the method (its sampler too where a table has it with two)
    detail: str  # the method with its preset and schedule
    cells: list[Cell | None] = field(default_factory=list)


@dataclass
class Overview:
    columns: list[Column]
    rows: list[OverviewRow]

    @property
    def empty(self) -> bool:
        return not self.columns


def overview_label(row: MethodRow, group: Group) -> str:
    """The method name; with its sampler where this table has the method twice (two samplers)."""
    twice = sum(r.method == row.method for r in group.rows) > 1
    return f"{row.method} [{row.sampler}]" if twice else row.method


def build_overview(tables: list[tuple[str, Group, str, str]]) -> Overview:
    """`tables`: (benchmark, group, title, anchor) in page order. Rows: methods in the most tables first,
    then in the order they first appear."""
    columns = [Column(benchmark, group, nfe, title, anchor) for benchmark, group, title, anchor in tables for nfe in group.nfes]
    rows: dict[str, OverviewRow] = {}
    for benchmark, group, _, _ in tables:
        verdicts = comparisons(group)
        ref = group.reference_row
        for i, row in enumerate(group.rows):
            key = overview_label(row, group)
            out = rows.setdefault(key, OverviewRow(key, method_label(row), [None] * len(columns)))
            for j, col in enumerate(columns):
                if col.group is not group:
                    continue
                values = row.values(col.nfe, group.rank_metric)
                if not values:
                    continue
                mark = "ref" if row is ref and len(group.rows) > 1 else ""
                c = verdicts.get((i, col.nfe))
                if c is not None and c.verdict in ("better", "worse"):
                    mark = c.verdict
                out.cells[j] = Cell(mean_std(values)[0], t_interval(values), len(values), mark, group.best(col.nfe) is row)
    order = list(rows)
    ranked = sorted(rows.values(), key=lambda r: (-sum(c is not None for c in r.cells), order.index(r.label)))
    return Overview(columns, ranked)


def column_header(col: Column) -> str:
    return f"{col.group.rank_metric} @ {col.nfe} NFE"


def table_header(col: Column) -> str:
    return col.benchmark if col.title == col.benchmark else f"{col.benchmark} · {col.title}"


def legend(ov: Overview) -> str:
    directions = sorted({f"{c.group.rank_metric} ({'lower' if c.group.lower_is_better else 'higher'} is better)"
                         for c in ov.columns})
    return (f"Each cell: the suite table's headline metric, {', '.join(directions)}, mean over seeds [95% Student-t "
            f"interval]; bold: the best mean of the column. \"better\" / \"worse\": the method's paired comparison to "
            f"its table's reference row (\"ref\") is resolved, {MULTIPLICITY}-controlled over that table; no mark: "
            f"not resolved (the table says what its seeds could resolve). Numbers compare only down a column: each "
            f"column is one suite's table (its data and evaluation protocol) at one NFE.")


def markdown_cell(cell: Cell | None) -> str:
    if cell is None:
        return ""
    text = f"**{cell.text}**" if cell.best else cell.text
    return f"{text} {cell.mark}" if cell.mark else text


def sort_value(cell: Cell | None) -> str:
    """The cell's mean at full precision, for sorting (empty cells sort last)."""
    return "" if cell is None or not math.isfinite(cell.mean) else repr(cell.mean)


def seeds_text(cell: Cell) -> str:
    return f"{cell.seeds} seed{'s' if cell.seeds != 1 else ''}; mean {fmt(cell.mean)}"


def overview_table(ov: Overview) -> Table:
    """The overview for Markdown: one header row ("suite · data: metric @ n NFE"), marks as words."""
    headers = ["method"] + [f"{table_header(c)}: {c.group.rank_metric}, {c.nfe} NFE" for c in ov.columns]
    return Table(headers, [[r.label] + [markdown_cell(c) for c in r.cells] for r in ov.rows], set())


def overview_html(ov: Overview) -> str:
    """The overview as an HTML table: a header row per suite table (linking to it) over one per NFE; every
    column sorts on click (by the mean); marks as coloured words."""
    esc = html.escape
    spans: list[tuple[Column, int]] = []
    for col in ov.columns:
        if spans and spans[-1][0].group is col.group:
            spans[-1] = (spans[-1][0], spans[-1][1] + 1)
        else:
            spans.append((col, 1))
    top = "".join(f"<th colspan='{n}' class='suite'><a href='#{esc(c.anchor)}'>{esc(table_header(c))}</a></th>" for c, n in spans)
    low = "".join(f"<th data-col='{j + 1}' title='sort'>{esc(column_header(c))}</th>" for j, c in enumerate(ov.columns))
    body = []
    for r in ov.rows:
        cells = [f"<th scope='row' data-v='{esc(r.label)}' title='{esc(r.detail)}'>{esc(r.label)}</th>"]
        for cell in r.cells:
            if cell is None:
                cells.append("<td class='n' data-v=''></td>")
                continue
            mean, _, interval = cell.text.partition(" ")
            text = f"<b>{esc(mean)}</b>" if cell.best else esc(mean)
            text += f" <span class='ci'>{esc(interval)}</span>" if interval else ""
            mark = f" <span class='mark'>{esc(cell.mark)}</span>" if cell.mark else ""
            cls = f"n {cell.mark}" if cell.mark else "n"
            cells.append(f"<td class='{cls}' data-v='{sort_value(cell)}' title='{esc(seeds_text(cell))}'>{text}{mark}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f"<div class='scroll'><table id='overview' class='sortable'><thead><tr><th rowspan='2' data-col='0' "
            f"title='sort'>method</th>{top}</tr><tr>{low}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")
