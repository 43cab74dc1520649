"""Each method keeps its colour across every plot of a suite."""

from matplotlib.axes import Axes

from flowzoo.leaderboard import plots
from flowzoo.leaderboard.aggregate import Group, MethodRow


def group(data: str, methods: list[str]) -> Group:
    rows = [MethodRow(m, m, None, "euler", [{"seed": 0, "evaluations": [{"nfe": 1, "sampler": "euler", "metrics": {"swd": 0.1 + i}}]}])
            for i, m in enumerate(methods)]
    return Group("toy", data, "p", {}, "swd", True, rows)


def test_method_colours_are_fixed_by_sorted_name_not_by_order():
    a = plots.method_colours(["shortcut", "meanflow", "flow_matching"])
    b = plots.method_colours(["flow_matching", "shortcut", "meanflow"])
    assert a == b and len(set(a.values())) == 3
    assert a["flow_matching"] == plots.PALETTE[0] and a["meanflow"] == plots.PALETTE[1]


def test_two_plots_of_one_suite_give_a_method_the_same_colour_though_their_methods_differ():
    # Two toys of the toy suite, each missing a different method: row order and membership differ.
    moons = plots.suite_colours(group("toy:moons", ["shortcut", "meanflow"]))
    checker = plots.suite_colours(group("toy:checkerboard", ["meanflow", "flow_matching", "alphaflow-sigmoid"]))
    assert moons == checker  # keyed by the suite's four methods, not by each plot's rows
    assert set(moons) == {"alphaflow-sigmoid", "meanflow", "flow_matching", "shortcut"}
    assert len(set(moons.values())) == 4


def test_the_nfe_plot_draws_each_method_in_its_suite_colour(monkeypatch):
    drawn = {}
    original = Axes.errorbar

    def spy(self, *args, label=None, color=None, **kw):
        drawn.setdefault(label, set()).add(color)
        return original(self, *args, label=label, color=color, **kw)

    monkeypatch.setattr(Axes, "errorbar", spy)
    first, second = group("toy:moons", ["shortcut", "meanflow"]), group("toy:spirals", ["meanflow"])
    plots.metric_vs_nfe(first)
    plots.metric_vs_nfe(second)
    assert len(drawn["meanflow"]) == 1 and drawn["meanflow"] == {plots.suite_colours(first)["meanflow"]}
