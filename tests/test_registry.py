"""Registries: decorators, entry-point plugins from another installed package, clear errors."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap

import pytest
import torch

from flowzoo.registry import OBJECTIVES, Registry, RegistryError
from tiny_nets import TinyVelocityNet


# The fake plugins use a group of their own, so the global registries stay untouched by these tests;
# the lookup machinery is the same for every group.
GROUP = "flowzoo.test_objectives"


def _fresh(kind="objective", group=GROUP):
    return Registry(kind, group)


def test_decorator_registers_and_duplicate_name_is_an_error():
    reg = _fresh()

    @reg.register("thing")
    def thing():
        return 1

    assert reg.get("thing") is thing
    with pytest.raises(RegistryError, match="registered twice"):
        reg.add("thing", lambda: 2, source="someone")


def test_unknown_name_suggests_the_closest_registered_names():
    with pytest.raises(RegistryError, match="did you mean 'meanflow'"):
        OBJECTIVES.get("meanflw")


def test_import_path_escape_hatch():
    assert OBJECTIVES.get("flowzoo.objectives.presets.meanflow:meanflow") is OBJECTIVES.get("meanflow")
    with pytest.raises(RegistryError, match="has no attribute"):
        OBJECTIVES.get("flowzoo.objectives:nope")


def test_build_rejects_arguments_the_factory_does_not_take():
    from flowzoo.registry import SCHEDULES

    with pytest.raises(RegistryError, match="bad arguments"):
        SCHEDULES.build({"name": "sigmoid", "gama": 3}, total_steps=10)


def _install_fake_distribution(root, dist_name, group, entries, module_name, module_source):
    (root / f"{module_name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{dist_name.replace('-', '_')}-0.1.dist-info"  # dist-info names use underscores
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")
    importlib.invalidate_caches()  # importlib.metadata caches directory listings by mtime


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    for name in ("zoo_plugin_ok", "zoo_plugin_broken"):
        sys.modules.pop(name, None)


def test_third_party_objective_is_discovered_through_its_entry_point_and_trains(plugin_path):
    _install_fake_distribution(
        plugin_path, "zoo-plugin-ok", GROUP, {"half_meanflow": "zoo_plugin_ok:build"}, "zoo_plugin_ok",
        """
        from flowzoo.objectives import create_objective

        def build(net, total_steps=None, **overrides):
            # a third-party preset: MeanFlow with half its batch on r = t
            return create_objective("meanflow", net, total_steps=total_steps, fm_ratio=0.5, **overrides)
        """,
    )
    _install_fake_distribution(
        plugin_path, "zoo-plugin-broken", GROUP, {"broken": "zoo_plugin_broken:build"},
        "zoo_plugin_broken", "raise ImportError('missing dependency xyz')\n",
    )
    reg = Registry("objective", GROUP)
    for name in OBJECTIVES.names():
        reg.add(name, OBJECTIVES.get(name))
    with pytest.warns(UserWarning, match="'broken'.*failed to import"):
        names = reg.names()
    assert "half_meanflow" in names and "meanflow" in names and "broken" not in names
    assert reg.entry("half_meanflow").source == "zoo-plugin-ok"
    with pytest.raises(RegistryError, match="failed to import"):
        reg.get("broken")

    net = TinyVelocityNet()
    objective = reg.get("half_meanflow")(net)
    loss, metrics = objective(torch.randn(8, 4), torch.randint(0, 3, (8,)), step=0, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and float(metrics["fm_ratio"]) == 0.5
    loss.backward()


def test_plugin_that_reuses_a_builtin_name_is_an_error(plugin_path):
    _install_fake_distribution(
        plugin_path, "zoo-plugin-ok", GROUP, {"meanflow": "zoo_plugin_ok:build"}, "zoo_plugin_ok",
        "def build(net, **kw):\n    return None\n",
    )
    reg = Registry("objective", GROUP)
    reg.add("meanflow", OBJECTIVES.get("meanflow"))
    with pytest.raises(RegistryError, match="registered twice"):
        reg.names()
    assert any(ep.name == "meanflow" for ep in importlib.metadata.entry_points(group=GROUP))
