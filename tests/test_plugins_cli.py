"""A plugin installed through an entry point: its unknown override is refused in one sentence like a
built-in's, and its distribution's name and version go into the run's provenance."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from flowzoo.registry import ALL_REGISTRIES, OBJECTIVES, load_builtins
from test_cli import TINY, flowzoo

MODULE = '''
from flowzoo.objectives import create_objective


def build(net, total_steps=None, fm_share=1.0):
    """Trajectory flow matching with a settable fm_ratio (a third-party objective for the tests)."""
    return create_objective("trajectory_fm", net, total_steps=total_steps, fm_ratio=fm_share)


build.default_sampler = "euler"
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A distribution 'flowzoo-test-plugin' 0.3.1 on sys.path, with one flowzoo.objectives entry point."""
    site = tmp_path / "site"
    (site / "flowzoo_test_plugin-0.3.1.dist-info").mkdir(parents=True)
    (site / "flowzoo_test_plugin.py").write_text(MODULE)
    info = site / "flowzoo_test_plugin-0.3.1.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flowzoo-test-plugin\nVersion: 0.3.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [flowzoo.objectives]
        plugin_tfm = flowzoo_test_plugin:build
    """))
    monkeypatch.syspath_prepend(str(site))
    load_builtins()
    for registry in ALL_REGISTRIES.values():  # restore every registry after the test
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    monkeypatch.setattr(OBJECTIVES, "_plugins_loaded", False)  # rescan the entry points
    return site


def test_the_entry_point_is_picked_up_with_its_distribution(installed_plugin):
    entry = OBJECTIVES.entry("plugin_tfm")
    assert entry.source == "flowzoo-test-plugin" and entry.version == "0.3.1"


def test_a_plugins_unknown_override_is_one_sentence_and_exit_2(installed_plugin, tmp_path, capsys):
    code, _, err = flowzoo("run", "--objective", "plugin_tfm", "--data", "toy:moons", "--steps", "2",
                           "--out", str(tmp_path / "run"), "--set", "objective.nonsense=1", *TINY, capsys=capsys)
    message = " ".join(err.split())
    assert code == 2 and "Traceback" not in err
    assert "unknown objective option(s) nonsense for objective 'plugin_tfm'; valid: fm_share." in message
    # ... worded like a built-in's refusal of the same override.
    code, _, err = flowzoo("run", "--objective", "meanflow", "--data", "toy:moons", "--steps", "2",
                           "--out", str(tmp_path / "run2"), "--set", "objective.nonsense=1", *TINY, capsys=capsys)
    assert code == 2 and "unknown objective option(s) nonsense" in err


def test_the_plugins_dist_and_version_are_in_the_provenance(installed_plugin, tmp_path):
    out = tmp_path / "run"
    code, _, _ = flowzoo("run", "--objective", "plugin_tfm", "--data", "toy:moons", "--steps", "4",
                         "--batch-size", "32", "--out", str(out), "--set", "objective.fm_share=0.5",
                         "--set", "eval.num_samples=100", "--set", "eval.previews=false", *TINY)
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["provenance"]["plugins"] == {"objective:plugin_tfm": {"dist": "flowzoo-test-plugin", "version": "0.3.1"}}
    assert set(result["results"]) == {"euler@1", "euler@2"}  # the plugin's default sampler
    from flowzoo.leaderboard.from_run import record_from_run

    record = record_from_run(out, benchmark="unit", method="plugin", command="flowzoo run ...")
    assert record["plugins"] == {"objective:plugin_tfm": {"dist": "flowzoo-test-plugin", "version": "0.3.1"}}


def test_a_run_of_built_ins_records_no_plugins(tmp_path):
    out = tmp_path / "run"
    code, _, _ = flowzoo("run", "--objective", "flow_matching", "--data", "toy:moons", "--steps", "2",
                         "--batch-size", "32", "--out", str(out), "--set", "eval.num_samples=100",
                         "--set", "eval.previews=false", *TINY)
    assert code == 0
    assert json.loads((out / "result.json").read_text())["provenance"]["plugins"] == {}
