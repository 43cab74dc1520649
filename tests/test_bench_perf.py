"""flowzoo bench perf: runs every registered objective, writes a valid record; its baseline is the same loss."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from flowzoo.backbones import create_backbone
from flowzoo.bench.perf import BASELINE, OFFICIAL, official_style_meanflow_loss, perf_command, run_perf
from flowzoo.objectives import create_objective
from flowzoo.registry import OBJECTIVES

TINY = dict(backbone="DiT-tiny/2", input_size=4, in_channels=2, num_classes=3, batch=4, threads=1)


def _perturbed_dit(seed=0, **kw):
    """A tiny DiT with its zero-initialised (adaLN-Zero) layers perturbed, so every path carries signal."""
    torch.manual_seed(seed)
    net = create_backbone("DiT-tiny/2", input_size=4, in_channels=2, num_classes=3, **kw)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return net


def test_run_perf_times_every_registered_objective_and_writes_a_valid_record(tmp_path):
    out = tmp_path / "perf.json"
    record = run_perf(**TINY, rounds=1, block=1, warmup=1, memory=True, out=out)
    on_disk = json.loads(out.read_text())
    assert on_disk["schema"] == record["schema"] and on_disk["device"] == "cpu"
    assert on_disk["torch"] == torch.__version__ and on_disk["threads"] == 1
    labels = {row["label"] for row in on_disk["cases"]}
    assert set(OBJECTIVES.names()) <= labels
    assert {"alphaflow@end", OFFICIAL, "meanflow[jvp=double_backward]", "meanflow[jvp=finite_difference]"} <= labels
    for row in on_disk["cases"]:
        assert row["error"] is None, row
        assert row["median_ms"] > 0 and row["ratio_to_flow_matching"] > 0 and row["images_per_s"] > 0
        assert row["peak_memory_mb"] is None or row["peak_memory_mb"] >= 0
    base = next(row for row in on_disk["cases"] if row["label"] == BASELINE)
    assert base["ratio_to_flow_matching"] == pytest.approx(1.0)
    alphas = {row["label"]: row["alpha"] for row in on_disk["cases"]}
    assert 0 < alphas["alphaflow"] < 1 and alphas["alphaflow@end"] == 0.0  # mid-curriculum and its end
    summary = on_disk["summary"]
    assert {"alpha_positive_ratio", "best_meanflow_ratio", "best_meanflow_vs_official"} <= set(summary)


def test_perf_command_mounts_on_a_typer_app(tmp_path):
    app = typer.Typer()
    bench = typer.Typer()
    bench.command("perf")(perf_command)
    app.add_typer(bench, name="bench")
    out = tmp_path / "p.json"
    args = ["bench", "perf", "--input-size", "4", "--in-channels", "2", "--batch", "2", "--rounds", "1",
            "--block", "1", "--warmup", "0", "--objective", "flow_matching", "--objective", "meanflow",
            "--no-jvp-backends", "--no-memory", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    labels = [row["label"] for row in json.loads(out.read_text())["cases"]]
    assert labels == ["flow_matching", "meanflow", OFFICIAL]
    bad = CliRunner().invoke(app, ["bench", "perf", "--precision", "fp8", "--out", str(out)])
    assert bad.exit_code == 2 and "precision" in bad.output


def _grads(net, loss):
    net.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("jvp", ["forward", "functorch", "double_backward"])
def test_official_style_baseline_is_the_meanflow_preset_loss_and_gradient(jvp):
    net = _perturbed_dit()
    objective = create_objective("meanflow", net, jvp=jvp)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 2, 4, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
    drawn = objective.draw(x, y, step=0, generator=torch.Generator().manual_seed(1))
    assert bool((drawn.r < drawn.t).any()) and bool((drawn.r == drawn.t).any())
    ours, _ = objective.loss(x, drawn, step=0)
    ours_grads = _grads(net, ours)
    official = official_style_meanflow_loss(net, x, drawn)
    official_grads = _grads(net, official)
    torch.testing.assert_close(ours, official, rtol=1e-5, atol=1e-6)
    for a, b in zip(ours_grads, official_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_utilisation_is_three_forwards_per_sample_over_the_step_time_and_peak():
    from flowzoo.bench.perf import add_utilisation

    record = {"config": {"batch": 64}, "forward_flops_per_sample": 1e10, "flow_matching_median_ms": 20.0,
              "device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3"}
    add_utilisation(record, None)
    u = record["utilisation"]
    # 3 x 1e10 FLOPs x 64 samples in 0.02 s = 96 TFLOP/s; the H100 SXM's dense bf16 peak is 989.4.
    assert u["achieved_tflops"] == pytest.approx(96.0)
    assert u["mfu"] == pytest.approx(96.0 / 989.4)
    cpu = {**record, "device": "cpu", "device_name": "x86_64 CPU (Linux)"}
    add_utilisation(cpu, None)
    assert cpu["utilisation"]["mfu"] is None  # no peak known for a CPU
    add_utilisation(cpu, 1.0)
    assert cpu["utilisation"]["mfu"] == pytest.approx(96.0)


def test_a_case_that_cannot_be_built_is_a_failed_row_not_a_crash():
    from flowzoo.bench.perf import Case, build_or_fail

    net = _perturbed_dit()
    x, y = torch.randn(4, 2, 4, 4), torch.randint(0, 3, (4,))
    runner = build_or_fail(Case("bad", "meanflow", {"jvp": "no_such_backend"}), lambda: net, x, y, 100, False)
    assert runner.error and runner.objective is None
    good = build_or_fail(Case("meanflow", "meanflow"), lambda: net, x, y, 100, False)
    assert good.error is None
    assert torch.isfinite(good.step_fn(0))


def test_a_bf16_record_has_its_setting_targets_and_an_fp32_target_case():
    record = run_perf(**{**TINY, "precision": "bf16"}, objectives=["flow_matching", "meanflow"], jvp_backends=False,
                      official=False, rounds=1, block=1, warmup=1, memory=False)
    labels = {row["label"] for row in record["cases"]}
    assert "meanflow[target fp32]" in labels  # bf16 steps also time the fp32 target, for the saving
    assert record["targets"]["meanflow_max_ratio"] == 2.0  # the cpu setting's targets
    assert record["utilisation"]["achieved_tflops"] > 0


def _cli(*args, timeout=120):
    """`flowzoo bench perf ...` in its own process: the profiler's chatter is written to fds 1/2 from C++,
    which only a real process's captured stdout/stderr show."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "flowzoo", "bench", "perf", "--setting", "tiny", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_perf_cli_prints_its_table_for_every_case_kind_and_no_profiler_chatter(tmp_path):
    """End to end: every registered objective, alphaflow@end, each JVP backend, the official-style step and
    TiM's dict JVP spec (once a rich NotRenderableError) make rows of the printed table; with the memory
    measurement on, torch.profiler's native lines (USDT profiler_start/stop, gpuGetDeviceCount failed) stay out."""
    from flowzoo.bench.perf import PROFILER_CHATTER

    out = tmp_path / "all.json"
    every = _cli("--no-memory", "--out", str(out))
    assert every.returncode == 0, every.stderr[-2000:]
    labels = [row["label"] for row in json.loads(out.read_text())["cases"]]
    assert set(OBJECTIVES.names()) <= set(labels) and "alphaflow@end" in labels and OFFICIAL in labels
    assert any(label.startswith("meanflow[jvp=") for label in labels)
    table = every.stdout
    assert "Step cost vs flow matching" in table
    for label in labels:
        assert f" {label} " in table, label  # each case is a row, its label whole
    tim = next(line for line in table.splitlines() if " tim " in line)
    assert "finite_difference(eps=0.005)" in tim  # the dict spec, rendered as text

    out = tmp_path / "memory.json"
    measured = _cli("--objective", "flow_matching", "--objective", "tim", "--no-jvp-backends", "--no-official",
                    "--out", str(out))
    assert measured.returncode == 0, measured.stderr[-2000:]
    assert all(row["peak_memory_mb"] is not None for row in json.loads(out.read_text())["cases"])  # the profiler ran
    assert "Step cost vs flow matching" in measured.stdout
    lines = (measured.stdout + measured.stderr).splitlines()
    chatter = [line for line in lines if PROFILER_CHATTER.search(line) or "USDT" in line or "gpuGetDeviceCount" in line]
    assert not chatter, chatter


def test_native_output_filter_keeps_unknown_lines_and_drops_chatter(capfd):
    import os

    from flowzoo.bench.perf import native_output_filtered

    with native_output_filtered():
        os.write(1, b"USDT:2026-01-01 1:1 SyncActivityProfilerHandler.cpp:39] profiler_start\n")
        os.write(2, b"ERROR:2026-01-01 1:1 DeviceProperties.cpp:56] gpuGetDeviceCount failed with code 35\n")
        os.write(2, b"something else went wrong\n")
    captured = capfd.readouterr()
    assert "USDT" not in captured.out + captured.err and "gpuGetDeviceCount" not in captured.out + captured.err
    assert "something else went wrong" in captured.err
