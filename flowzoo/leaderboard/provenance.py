"""What a reader needs to trust a table: which commits, package versions, devices and hardware its records came from.

`provenance_line` summarises a group (each distinct value with how many records have it); the details
table lists every record, so a single number can be traced to the commit that re-runs it. The hardware
(CPU model and torch's CPU kernel set; GPU, driver, CUDA, cuDNN) matters: the same seed and config on
another CPU, or under another kernel set (ATEN_CPU_CAPABILITY), can move a small-data result by more than
a method difference. `hardware_note` says when a table mixes machines, and which seeds ran on which;
`same_cells_elsewhere` sets a group's records beside the same cells (config and seed) run on other hardware.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from flowzoo.leaderboard.aggregate import Group, mean_std
from flowzoo.leaderboard.record import is_dirty
from flowzoo.leaderboard.tables import Table, fmt

NOT_RECORDED = "hardware not recorded"

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


def hardware_label(record: dict) -> str:
    """"CPU model (family/model), capability" (+ "; GPU, driver, CUDA, cuDNN" on CUDA); old records: not recorded."""
    hw = record.get("hardware")
    if not isinstance(hw, dict) or not (hw.get("cpu_model") or hw.get("gpu_name")):
        return NOT_RECORDED
    cpu = str(hw.get("cpu_model") or "unknown CPU")
    cpu_id = str(hw.get("cpu_id") or "")
    if " family " in cpu_id:  # "AuthenticAMD family 25 model 17 stepping 1" -> "family 25 model 17"
        cpu += " (" + " ".join(cpu_id.split()[1:5]) + ")"
    label = f"{cpu}, {hw.get('cpu_capability') or 'capability unknown'}"
    if hw.get("gpu_name"):
        gpu = [str(hw["gpu_name"])] + [f"{name} {hw[key]}" for key, name in
                                       (("gpu_driver", "driver"), ("cuda", "CUDA"), ("cudnn", "cuDNN")) if hw.get(key)]
        label = ", ".join(gpu) + f"; host {label}"
    return label


def _seed_ranges(seeds: list[int]) -> str:
    """[0, 1, 2, 4] -> "0-2, 4"."""
    seeds, parts, start = sorted(set(seeds)), [], None
    for i, seed in enumerate(seeds):
        start = seed if start is None else start
        if i + 1 == len(seeds) or seeds[i + 1] != seed + 1:
            parts.append(str(start) if start == seed else f"{start}-{seed}")
            start = None
    return ", ".join(parts)


def hardware_note(group: Group) -> str | None:
    """One sentence when the group's records ran on more than one machine (or some say nothing of theirs):
    each machine with the seeds of each method that ran on it. None when they all agree."""
    by_label: dict[str, dict[str, list[int]]] = {}
    for row in group.rows:
        for r in row.records:
            seeds = by_label.setdefault(hardware_label(r), {}).setdefault(row.method, [])
            if r["seed"] not in seeds:  # one method's rows for two samplers share their records
                seeds.append(r["seed"])
    if len(by_label) < 2:
        return None
    machines = "; ".join(f"{label}: " + ", ".join(f"{m} seeds {_seed_ranges(seeds)}" for m, seeds in methods.items())
                         for label, methods in sorted(by_label.items()))
    return (f"Mixed hardware: this table's records ran on {len(by_label)} different machines or kernel sets "
            f"({machines}). The same seed and config on another CPU or kernel set can differ by more than a method "
            f"difference on small data, so differences between these rows mix the machine with the method.")


def provenance_line(group: Group) -> str:
    records = group.records
    finished = sorted(r["finished"] for r in records if r.get("finished"))
    dates = (f"finished {finished[0][:16].replace('T', ' ')} to {finished[-1][:16].replace('T', ' ')} UTC"
             + ("" if len(finished) == len(records) else f" ({len(records) - len(finished)} records without a date)")
             if finished else "finish dates not recorded")
    dirty = sum(is_dirty(r) for r in records)
    parts = [f"{len(records)} records", f"commit {_counted([_commit(r) for r in records])}",
             _counted([_versions(r) for r in records]), f"device {_counted([str(r['compute'].get('device')) for r in records])}",
             f"hardware {_counted([hardware_label(r) for r in records])}", dates]
    if dirty:
        parts.append(f"{dirty} from dirty trees (marked *, not reproducible from their commit)")
    return "; ".join(parts)


def provenance_details(group: Group) -> Table:
    headers = ["method", "seed", "commit", "versions", "device", "hardware", "finished", "train wall time (s)", "command"]
    rows, listed = [], set()
    for row in group.rows:
        for r in sorted(row.records, key=lambda r: r["seed"]):
            if id(r) in listed:  # a record evaluated with two samplers belongs to two rows: list it once
                continue
            listed.add(id(r))
            rows.append([row.method, str(r["seed"]), _commit(r), _versions(r), str(r["compute"].get("device")),
                         hardware_label(r), r.get("finished", "–"), f"{r['compute']['wall_time_s']:.0f}", r["command"]])
    return Table(headers, rows, set())


def same_cells_elsewhere(group: Group, records: list[dict[str, Any]]) -> tuple[Table, str] | None:
    """The group's records beside every record of the same cell (config hash and seed) on other hardware, in
    any suite: the rank metric at the lowest NFE here and there, and their difference. With the summary line
    that puts that machine spread beside the seed spread (std over seeds of the same methods here)."""
    metric, nfe = group.rank_metric, (group.nfes or [1])[0]
    if not metric:
        return None

    def value(r: dict, sampler: str | None) -> float | None:  # the row's own sampler (a row is method x sampler)
        return next((float(ev["metrics"][metric]) for ev in r["evaluations"] if ev["nfe"] == nfe and metric in ev["metrics"]
                     and (sampler is None or ev["sampler"] == sampler)), None)

    by_cell: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        by_cell.setdefault((r["config_hash"], r["seed"]), []).append(r)
    rows, deltas, seed_stds = [], [], []
    for row in group.rows:
        found, sampler = False, getattr(row, "sampler", None)
        name = row.method + (f" [{sampler}]" if sum(o.method == row.method for o in group.rows) > 1 else "")
        for r in sorted(row.records, key=lambda r: r["seed"]):
            here, label = value(r, sampler), hardware_label(r)
            seen: set[str] = set()
            for other in by_cell.get((r["config_hash"], r["seed"]), []):
                there, other_label = value(other, sampler), hardware_label(other)
                if other is r or other_label == label or other_label in seen or here is None or there is None:
                    continue
                seen.add(other_label)  # one twin per machine: copies of one run (reused_from) are not new measurements
                found = True
                deltas.append(there - here)
                rows.append([name, str(r["seed"]), label, fmt(here), f"{other_label} ({other['benchmark']})",
                             fmt(there), f"{there - here:+.3f}"])
        values = row.values(nfe, metric)
        if found and len(values) > 1:
            seed_stds.append(f"{name} {fmt(mean_std(values)[1])}")
    if not rows:
        return None
    table = Table(["method", "seed", "hardware here", f"{metric} @ {nfe} NFE here", "other hardware (suite)",
                   f"{metric} there", "Δ (there - here)"], rows, set())
    spread = [abs(d) for d in deltas]
    summary = (f"Same cell on other hardware: {len(deltas)} pairs, |Δ {metric}| mean {fmt(sum(spread) / len(spread))}, "
               f"max {fmt(max(spread))}")
    if seed_stds:
        summary += f"; beside the seed spread here (std over seeds: {', '.join(seed_stds)})"
    return table, summary + "."
