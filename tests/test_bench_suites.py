"""Benchmark suites: validation, the built-in grids, and `flowzoo bench SUITE` end to end on a tiny suite."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from flowzoo.bench.runner import cell_state
from flowzoo.bench.suite import get_suite, suite_from_dict
from flowzoo.config import ConfigError, config_hash
from flowzoo.leaderboard.record import load_records, read_record
from flowzoo.registry import BENCHMARKS
from flowzoo.pipeline.provenance import git_commit
from test_cli import flowzoo

# Records from a dirty tree are re-run and left out of rankings by design, so the tests that re-run a grid
# and expect its records to count need a clean checkout (CI's is; a working copy with edits skips them).
DIRTY = git_commit()["dirty"] is True
needs_clean_checkout = pytest.mark.skipif(DIRTY, reason="needs a clean checkout: records from a dirty tree do not count")

TINY_BUDGET = {"train.steps": 12, "train.log_every": 4, "train.sample_every": 6, "train.checkpoint_every": 6,
               "train.warmup_steps": 2, "backbone.width": 32, "backbone.depth": 1, "eval.num_samples": 2000,
               "eval.previews": False}


def tiny_suite(name: str, **changes) -> dict:
    spec = {"description": "two objectives on 8 gaussians, a few steps", "data": "toy:8gaussians", "seeds": [0],
            "nfe": [1, 2], "budget": dict(TINY_BUDGET),
            "methods": [{"name": "fm", "objective": "flow_matching"}, {"name": "mf", "objective": "meanflow"}]}
    spec.update(changes)
    return spec


@pytest.mark.parametrize("change, phrase", [
    ({"seedz": [0]}, "unknown key(s) seedz"),
    ({"methods": []}, "'methods' is required"),
    ({"methods": [{"name": "a", "objective": "meanflow"}, {"name": "a", "objective": "flow_matching"}]}, "must be unique"),
    ({"methods": [{"objective": "meanflow"}]}, "needs a name and an objective"),
    ({"nfe": [0]}, "nfe positive integers"),
    ({"compare_at": "wall_time"}, "compare_at must be 'steps'"),
    ({"cpu_capability": "fast"}, "cpu_capability must be one of default"),
])
def test_a_malformed_suite_is_one_sentence_naming_the_key(change, phrase):
    with pytest.raises(ConfigError, match=None) as info:
        suite_from_dict("bad", tiny_suite("bad", **change))
    assert phrase in str(info.value)


def test_builtin_suites_resolve_every_cell_to_the_config_they_describe(tmp_path):
    for name in ("toy", "digits", "alphaflow-ablation", "fashion"):
        suite = get_suite(name)
        for cell in suite.cells():
            cfg = cell.resolved_config(tmp_path)
            assert cfg["objective"]["name"] == cell.method.objective and cfg["seed"] == cell.seed
            assert cfg["train"]["steps"] == suite.budget["train.steps"]  # equal compute within a suite
            assert cfg["eval"]["samplers"] == {cell.sampler(): suite.nfe} and cfg["eval"]["curve"] is True
    ablation = {c.method.name: c.resolved_config(tmp_path)["objective"] for c in get_suite("alphaflow-ablation").cells()}
    assert ablation["constant-0"]["alpha"] == {"name": "constant", "value": 0.0}
    assert ablation["sigmoid-middle"]["alpha"]["start_frac"] == 0.375 and ablation["sigmoid-middle"]["alpha"]["end_frac"] == 0.625
    assert ablation["sigmoid-whole"]["alpha"]["start_frac"] == 0.0 and ablation["sigmoid-whole"]["alpha"]["end_frac"] == 1.0
    assert ablation["fm75-constant-0"]["fm_ratio"] == 0.75 and ablation["fm25-sigmoid-whole"]["fm_ratio"] == 0.25
    assert ablation["constant-0"]["fm_ratio"] == 0.5


@needs_clean_checkout
def test_a_cell_command_reproduces_the_config_the_runner_checks(tmp_path, capsys):
    """The command a record carries, run by hand, trains exactly the config whose hash the runner expects."""
    BENCHMARKS.add("test-command", tiny_suite("test-command", methods=[{"name": "fm", "objective": "flow_matching"}]))
    cell = get_suite("test-command").cells()[0]
    args = shlex.split(cell.command(tmp_path))
    assert args[:2] == ["flowzoo", "run"]
    args = args[2:]
    code, _, err = flowzoo("run", *args, capsys=capsys)
    assert code == 0, err
    saved = yaml.safe_load((cell.run_dir(tmp_path) / "config.yaml").read_text())
    assert config_hash(saved) == config_hash(cell.resolved_config(tmp_path))
    assert cell_state(cell, tmp_path, tmp_path / "results")[0] == "record"


@needs_clean_checkout
def test_bench_runs_the_grid_skips_valid_results_and_never_overwrites_a_changed_one(tmp_path, capsys):
    BENCHMARKS.add("test-grid", tiny_suite("test-grid"))
    runs, results = tmp_path / "runs", tmp_path / "results"
    common = ["--runs", str(runs), "--results", str(results)]
    code, out, err = flowzoo("bench", "test-grid", "--jobs", "2", "--threads", "1", *common, capsys=capsys)
    assert code == 0, out + err
    loaded = load_records(results)
    assert sorted(r["method"] for r in loaded.records) == ["fm", "mf"] and not loaded.problems()
    fm = read_record(results / "test-grid" / "toy-8gaussians" / "fm-s0.json")
    assert {(e["sampler"], e["nfe"]) for e in fm["evaluations"]} == {("euler", 1), ("euler", 2)}
    assert fm["compute"]["steps"] == 12 and fm["compute"]["images_seen"] == 12 * 256
    assert fm["compute"]["passes_per_step"] == {"forward": 1.0, "jvp": 0.0, "backward": 1.0}
    mf = read_record(results / "test-grid" / "toy-8gaussians" / "mf-s0.json")
    assert mf["compute"]["passes_per_step"]["jvp"] > 0  # MeanFlow's r < t samples take the JVP
    assert mf["compute"]["train_flops"] > fm["compute"]["train_flops"] > 0
    assert fm["compute"]["threads"] == 1
    assert fm["curve"] and fm["curve"][-1]["step"] == 12 and "swd" in fm["curve"][-1]["metrics"]
    assert fm["protocol"]["metrics"]["toy2d"]["num_samples"] == 2000
    assert fm["command"].startswith("flowzoo run --objective flow_matching")

    # Everything valid: nothing runs again.
    code, out, _ = flowzoo("bench", "test-grid", *common, capsys=capsys)
    assert code == 0 and "2 have valid records" in out and "0 trained" in out

    # A corrupt record is set aside (not deleted) and rebuilt from the finished run, without training.
    path = results / "test-grid" / "toy-8gaussians" / "mf-s0.json"
    path.write_text("{ torn")
    code, out, _ = flowzoo("bench", "test-grid", *common, capsys=capsys)
    assert code == 0 and "1 finished runs recorded" in out
    assert read_record(path)["method"] == "mf"
    assert [p.read_text() for p in path.parent.glob("mf-s0.invalid-*")] == ["{ torn"]

    # The suite changes its budget: the old results are reported as stale and left untouched.
    BENCHMARKS._entries.pop("test-grid")
    BENCHMARKS.add("test-grid", tiny_suite("test-grid", budget={**TINY_BUDGET, "train.steps": 14}))
    before = path.read_bytes()
    code, out, _ = flowzoo("bench", "test-grid", *common, capsys=capsys)
    assert code == 1 and "different config" in out
    assert path.read_bytes() == before


def test_bench_bad_input_is_one_sentence(capsys):
    code, _, err = flowzoo("bench", "toy", "--seeds", "7", capsys=capsys)
    assert code == 2 and "has seeds [0, 1, 2]" in err and len(err.strip().splitlines()) == 1
    code, _, err = flowzoo("bench", "toy", "--seeds", "x", capsys=capsys)
    assert code == 2 and "comma-separated integers" in err


def test_dry_run_prints_every_cell_command(capsys, tmp_path):
    code, out, _ = flowzoo("bench", "digits", "--dry-run", "--runs", str(tmp_path), "--results", str(tmp_path / "r"), capsys=capsys)
    assert code == 0
    assert out.count("flowzoo run --objective") == len(get_suite("digits").cells())


def test_a_finished_run_from_a_dirty_tree_is_not_recorded_as_valid(tmp_path):
    """Dirty results cannot be reproduced from their commit: the runner asks for a clean re-run."""
    import json

    BENCHMARKS.add("test-dirty", tiny_suite("test-dirty", methods=[{"name": "fm", "objective": "flow_matching"}]))
    cell = get_suite("test-dirty").cells()[0]
    run_dir = cell.run_dir(tmp_path)
    run_dir.mkdir(parents=True)
    expected = config_hash(cell.resolved_config(tmp_path))
    for dirty, state in ((False, "record"), (True, "stale")):
        prov = {"config_hash": expected, "commit": "0" * 40, "dirty": dirty}
        (run_dir / "result.json").write_text(json.dumps({"provenance": prov}))
        got, why = cell_state(cell, tmp_path, tmp_path / "results")
        assert got == state and (not dirty or "dirty tree" in why)


def test_a_cell_another_suite_already_trained_is_copied_not_retrained(tmp_path):
    """The zoo's flow-matching cell is the digits suite's flow-matching cell (same data, seed, config
    hash): its committed record is reused under the zoo's name, saying where it came from; a dirty one is not."""
    import json
    import shutil

    from flowzoo.bench.runner import cell_state, write_reused_record

    results, runs = tmp_path / "results", tmp_path / "runs"
    source = results / "digits" / "digits" / "flow_matching-s0.json"
    source.parent.mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "leaderboard" / "results" / "digits" / "digits" / "flow_matching-s0.json", source)
    cell = next(c for c in get_suite("zoo").cells() if c.method.name == "flow_matching" and c.seed == 0)
    other = next(c for c in get_suite("zoo").cells() if c.method.name == "imf" and c.seed == 0)
    state, why = cell_state(cell, runs, results)
    assert (state, Path(why)) == ("reuse", source)
    assert cell_state(other, runs, results)[0] == "run"  # nothing trained it yet

    copy = read_record(write_reused_record(cell, source, runs, results))
    original = read_record(source)
    assert copy["benchmark"] == "zoo" and copy["reused_from"] == "digits/digits/flow_matching-s0.json"
    assert copy["compute"]["budget"] == {"equal": "steps"}  # what the zoo holds equal, in its own record
    assert copy["evaluations"] == original["evaluations"] and copy["config_hash"] == original["config_hash"]
    assert cell_state(cell, runs, results)[0] == "skip"  # and from now on it is the zoo's valid record

    dirty = json.loads(source.read_text())
    dirty["code"]["dirty"] = True
    source.write_text(json.dumps(dirty))
    (results / "zoo" / "digits" / "flow_matching-s0.json").unlink()
    assert cell_state(cell, runs, results)[0] == "run"  # uncommitted code's record is never reused


def _hand_cost(objective: str, steps: int, forward_flops: float, num_classes: int = 1) -> float:
    """FLOPs per sample and step by hand: forward + 2 x backward + 2 x JVP passes, times a forward's FLOPs."""
    from flowzoo.leaderboard.compute_cost import passes_per_step

    p = passes_per_step(objective, {}, steps, num_classes=num_classes)
    return forward_flops * (p["forward"] + 2 * p["backward"] + 2 * p["jvp"])


def test_equal_flops_gives_each_method_the_steps_of_the_reference_flops(tmp_path):
    """compare_at flops: MeanFlow's step is 1 forward + 1 backward + 0.25 JVP = 3.5 forwards, flow matching's
    3; at the reference's (flow matching's) 1,000 steps MeanFlow gets round(1000 x 3 / 3.5) = 857."""
    budget = {**TINY_BUDGET, "train.steps": 1000}
    BENCHMARKS.add("test-flops", tiny_suite("test-flops", compare_at="flops", budget=budget, reference_method="fm"))
    suite = get_suite("test-flops")
    fm, mf = (next(c for c in suite.cells() if c.method.name == n) for n in ("fm", "mf"))
    assert fm.budget()["steps"] == 1000 and fm.resolved_config(tmp_path)["train"]["steps"] == 1000
    forward = mf.budget()["forward_flops_per_sample"]
    by_hand = 1000 * _hand_cost("flow_matching", 1000, forward) / _hand_cost("meanflow", 1000, forward)
    assert mf.budget()["steps"] == int(by_hand + 0.5) == 857
    assert mf.resolved_config(tmp_path)["train"]["steps"] == 857 and "train.steps=857" in mf.command(tmp_path)
    b = mf.budget()
    assert b["equal"] == "flops" and b["reference"] == "fm" and b["reference_steps"] == 1000
    assert abs(b["train_flops"] - b["reference_train_flops"]) <= b["flops_per_sample_step"] * b["batch_size"] / 2
    # --methods mf alone still spends the reference's FLOPs (the reference is kept for the budget)
    from flowzoo.bench.suite import only_methods

    alone = only_methods(suite, "mf").cells()[0]
    assert [c.method.name for c in only_methods(suite, "mf").cells()] == ["mf"] and alone.budget()["steps"] == 857


def test_equal_flops_dry_run_lists_every_cell_with_its_steps(capsys, tmp_path):
    from flowzoo.bench.estimate import data_shape, forward_flops

    suite = get_suite("digits-equal-flops")
    assert suite.compare_at == "flops" and suite.reference_method == "alphaflow-sigmoid"
    assert [m.name for m in suite.methods] == ["alphaflow-sigmoid", "meanflow", "flow_matching"] and suite.seeds == [0, 1, 2, 3, 4]
    digits = get_suite("digits")  # otherwise the digits suite's rows
    assert suite.budget == digits.budget and suite.nfe == digits.nfe and suite.data == digits.data
    assert [m for m in digits.methods if m.name in ("alphaflow-sigmoid", "meanflow", "flow_matching")] == suite.methods

    code, out, _ = flowzoo("bench", "digits-equal-flops", "--dry-run", "--runs", str(tmp_path), "--results",
                           str(tmp_path / "r"), capsys=capsys)
    assert code == 0
    cfg = next(c for c in suite.cells() if c.method.name == "flow_matching").resolved_config(tmp_path, budget=False)
    forward = forward_flops(cfg, *data_shape(cfg)[:2])
    from flowzoo.leaderboard.compute_cost import passes_per_step

    alpha_cell = next(c for c in suite.cells() if c.method.name == "alphaflow-sigmoid")
    spec = {k: v for k, v in alpha_cell.resolved_config(tmp_path, budget=False)["objective"].items() if k != "name"}
    alpha = passes_per_step("alphaflow", spec, 10000, num_classes=10)  # as the records measure it
    c_alpha = forward * (alpha["forward"] + 2 * alpha["backward"] + 2 * alpha["jvp"])
    fm_steps = int(10000 * c_alpha / _hand_cost("flow_matching", 10000, forward, 10) + 0.5)
    assert 11000 < fm_steps < 12500  # alpha-Flow's step costs ~3.5 forwards, flow matching's 3
    for cell in suite.cells():
        steps = {"flow_matching": fm_steps}.get(cell.method.name, cell.budget()["steps"])
        assert f"# {cell.key}: " in out and f"--set train.steps={steps} " in out
        line = next(l for l in out.splitlines() if l.startswith(f"# {cell.key}: "))
        assert f"{steps:,} steps (equal FLOPs)" in line
    assert f"flow_matching {fm_steps:,} steps" in out and "alphaflow-sigmoid 10,000 steps" in out


def test_a_cpu_capability_suite_runs_its_cells_under_that_kernel_set_and_reuses_no_other_machine(tmp_path):
    """digits-cpu-default: the digits cells under ATEN_CPU_CAPABILITY=default; a digits record (another kernel
    set, or none recorded) is the same config but not the same measurement, so it is never copied in."""
    import json
    import shutil

    from flowzoo.bench.runner import expected_hardware

    suite = get_suite("digits-cpu-default")
    assert suite.cpu_capability == "default" and suite.seeds == [0, 1, 2]
    cell = next(c for c in suite.cells() if c.method.name == "meanflow" and c.seed == 0)
    assert cell.command(tmp_path).startswith("ATEN_CPU_CAPABILITY=default flowzoo run ")
    digits_cell = next(c for c in get_suite("digits").cells() if c.method.name == "meanflow" and c.seed == 0)
    assert config_hash(cell.resolved_config(tmp_path)) == config_hash(digits_cell.resolved_config(tmp_path))

    results = tmp_path / "results"
    source = results / "digits" / "digits" / "meanflow-s0.json"
    source.parent.mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "leaderboard" / "results" / "digits" / "digits" / "meanflow-s0.json", source)
    record = json.loads(source.read_text())
    record.pop("hardware", None)
    source.write_text(json.dumps(record))
    assert cell_state(cell, tmp_path / "runs", results)[0] == "run"  # hardware not recorded: not reused here
    record["hardware"] = {**expected_hardware(cell), "cpu_capability": "AVX512"}
    source.write_text(json.dumps(record))
    assert cell_state(cell, tmp_path / "runs", results)[0] == "run"  # another kernel set
    record["hardware"] = {**expected_hardware(cell), "machine": "x86_64"}
    source.write_text(json.dumps(record))
    assert cell_state(cell, tmp_path / "runs", results)[0] == "reuse"  # the same CPU and kernel set
    assert expected_hardware(cell)["cpu_capability"] == "DEFAULT"
