"""Leaderboard figures as PNG bytes: metric vs NFE, metric vs training compute, alpha / fm_ratio schedules.

Each method keeps one colour across every plot of its suite: `suite_colours` gives the suite's methods,
sorted by name, the palette's colours in order, so a plot that lacks a method (another toy, a group
without curves) still draws the others in their usual colours.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from flowzoo.leaderboard.aggregate import Group, curve_mean, mean_std  # noqa: E402

COMPUTE_AXES = (("images_seen", "images seen"), ("wall_time_s", "training wall time (s)"))
PALETTE = tuple(matplotlib.colormaps["tab10"].colors)  # ten distinct colours; tab20 beyond ten methods


def method_colours(methods) -> dict[str, tuple]:
    """A fixed colour per method name: the sorted names take the palette's colours in order."""
    names = sorted(set(methods))
    palette = PALETTE if len(names) <= len(PALETTE) else tuple(matplotlib.colormaps["tab20"].colors)
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def suite_colours(group: Group) -> dict[str, tuple]:
    """The colour map shared by every plot of `group`'s suite: keyed by the suite's method list (and any
    method of the group the suite does not name, e.g. records of a suite no longer registered)."""
    from flowzoo.bench.suite import get_suite
    from flowzoo.config import ConfigError

    try:
        names = {m.name for m in get_suite(group.benchmark).methods}
    except (LookupError, ConfigError):
        names = set()
    return method_colours(names | {row.method for row in group.rows})


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def metric_vs_nfe(group: Group) -> bytes:
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    colours = suite_colours(group)
    for row in group.rows:
        points = [(n, mean_std(v)) for n in group.nfes if (v := row.values(n, group.rank_metric))]
        if points:
            ax.errorbar([p[0] for p in points], [p[1][0] for p in points], yerr=[p[1][1] for p in points],
                        marker="o", capsize=3, label=row.method, color=colours[row.method])
    ax.set_xscale("log", base=2)
    ax.set_xticks(group.nfes, [str(n) for n in group.nfes])
    ax.set_xlabel("NFE (network evaluations per sample)")
    ax.set_ylabel(f"{group.rank_metric} (mean ± std over seeds)")
    ax.set_yscale("log")
    ax.set_title(f"{group.benchmark} · {group.data}: {group.rank_metric} vs NFE", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def metric_vs_compute(group: Group) -> bytes | None:
    """1-NFE metric along training (eval_curve), against images seen and against wall time."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"wspace": 0.3})
    colours = suite_colours(group)
    drawn = False
    for ax, (axis, label) in zip(axes, COMPUTE_AXES):
        for row in group.rows:
            xs, means, stds = curve_mean(row, group.rank_metric, axis)
            if xs:
                drawn = True
                ax.plot(xs, means, label=row.method, color=colours[row.method])
                ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                                color=colours[row.method], alpha=0.15)
        ax.set_xlabel(label)
        ax.set_ylabel(f"{group.rank_metric} at 1 NFE")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if not drawn:
        plt.close(fig)
        return None
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{group.benchmark} · {group.data}: 1-NFE {group.rank_metric} vs training compute", fontsize=10)
    return _png(fig)


def schedules(group: Group) -> bytes | None:
    """alpha and the measured fm_ratio over training, as logged by the first seed of each method."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    colours = suite_colours(group)
    drawn = False
    for ax, key in zip(axes, ("alpha", "fm_ratio")):
        for row in group.rows:
            sched = row.records[0].get("schedules", {})
            if key in sched:
                drawn = True
                ax.plot(sched["step"], sched[key], label=row.method, color=colours[row.method])
        ax.set_xlabel("training step")
        ax.set_ylabel(key if key == "alpha" else "fm_ratio (fraction with r = t)")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    if not drawn:
        plt.close(fig)
        return None
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{group.benchmark}: alpha and fm_ratio schedules over training", fontsize=10)
    return _png(fig)
