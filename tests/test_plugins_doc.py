"""docs/plugins.md runs: every python block is executed in order, then each example it registers is
built and used for one step or call, so the documented contract cannot drift from the code."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from flowzoo.registry import ALL_REGISTRIES, load_builtins

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.fixture
def registered(monkeypatch, capsys):
    """The doc's blocks executed (registering its examples); every registry is restored afterwards."""
    load_builtins()
    for registry in ALL_REGISTRIES.values():
        registry.names()  # load plugins now, so the snapshot is complete
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    namespace: dict = {"__name__": "plugins_doc"}
    for block in python_blocks(DOC.read_text()):
        exec(compile(block, str(DOC), "exec"), namespace)
    printed = capsys.readouterr().out
    return namespace, printed


def test_the_doc_has_a_runnable_example_for_every_kind():
    text = DOC.read_text()
    for heading in ("## Objective", "## Schedule", "## Sampler", "## Backbone", "## Dataset", "## Metric"):
        assert heading in text
    assert len(python_blocks(text)) >= 7
    for contract in ("forward(x, y, step, generator) -> (loss, metrics)", "net(z, t, t - r, y)", "default_sampler"):
        assert contract in text


def test_every_documented_example_registers_builds_and_runs(registered):
    from flowzoo.backbones import create_backbone
    from flowzoo.data import create_dataset
    from flowzoo.objectives import create_objective
    from flowzoo.objectives.schedules import build_schedule
    from flowzoo.registry import METRICS, OBJECTIVES, SAMPLERS
    from flowzoo.samplers import sample

    _, printed = registered
    assert "radius_gap" in printed  # the "All together" block ran to its end

    rings = create_dataset("example_rings")
    x, y = rings.stream(16, seed=0).next()
    assert x.shape == (16, 2) and set(y.tolist()) <= {0, 1}
    ref, ref_y = rings.reference(32, seed=3)
    assert ref.shape == (32, 2) and torch.equal(ref, rings.reference(32, seed=3)[0])

    net = create_backbone("example_mlp", sample_shape=(2,), num_classes=2, width=16)
    t = torch.rand(16)
    assert net(x, t, torch.zeros(16), y).shape == x.shape and net(x, t, t, None).shape == x.shape

    objective = create_objective("example_velocity_matching", net, total_steps=5, t_std=0.5)
    loss, metrics = objective(x, y, 0, torch.Generator().manual_seed(0))
    loss.backward()
    assert math.isfinite(float(loss.detach())) and set(metrics) == {"loss", "mse"}
    assert all(p.grad is not None for p in net.parameters())
    assert OBJECTIVES.get("example_velocity_matching").default_sampler == "euler"
    assert OBJECTIVES.entry("example_velocity_matching").source == "flowzoo-example-plugin"

    decay = build_schedule({"name": "example_decay", "tau_frac": 0.1}, total_steps=100)
    assert decay.value(0) == 1.0 and 0 < decay.value(10) < 1 and decay.value(100) == 0.0

    assert SAMPLERS.get("example_midpoint").steps_for_nfe(4) == 2
    out = sample("example_midpoint", net, torch.randn(8, 2), nfe=4, cond=torch.arange(8) % 2)
    assert out.shape == (8, 2) and torch.isfinite(out).all()

    metric = METRICS.get("example_radius")(seed=0)
    assert metric.supports(rings) and not metric.supports(create_dataset("toy:moons"))
    assert metric(ref, None, rings)["radius_gap"] >= 0 and "real/radius_gap" in metric.reference(rings)


def test_the_documented_objective_trains_in_the_loop(registered, tmp_path):
    # One real training step through flowzoo.train with the documented parts (generator, DDP-wrappable module).
    from flowzoo.backbones import create_backbone
    from flowzoo.data import create_dataset
    from flowzoo.objectives import create_objective
    from flowzoo.train import TrainOptions, train

    rings = create_dataset("example_rings")
    net = create_backbone("example_mlp", sample_shape=(2,), num_classes=2, width=16)
    objective = create_objective("example_velocity_matching", net, total_steps=2)
    opts = TrainOptions(out_dir=str(tmp_path / "run"), steps=2, batch_size=8, warmup_steps=1, log_every=1,
                        checkpoint_every=2, sample_every=100, ema_halflives=[10.0], quiet=True)
    state = train(opts, net, objective, rings)
    assert state.step == 2 and state.skipped_steps == 0
