"""Result records (schema, corrupt and duplicate files) and `flowzoo leaderboard build` (tables, HTML, plots)."""

from __future__ import annotations

import copy
import json
import re
import statistics

import pytest

from flowzoo.leaderboard.aggregate import group_records
from flowzoo.leaderboard.build import build_leaderboard
from flowzoo.leaderboard.from_run import record_from_run
from flowzoo.leaderboard.record import RecordError, load_records, protocol_id, read_record, validate_record, write_record
from test_cli import TINY, flowzoo


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> dict:
    """One real record: a 12-step flow-matching run on 8 gaussians with the training curve on."""
    out = tmp_path_factory.mktemp("runs") / "fm"
    code, _, _ = flowzoo("run", "--objective", "flow_matching", "--data", "toy:8gaussians", "--steps", "12",
                         "--out", str(out), "--set", "eval.curve=true", "--set", "eval.samplers={euler: [1, 2]}", *TINY)
    assert code == 0
    return record_from_run(out, benchmark="unit", method="fm", command="flowzoo run ...")


def variant(record: dict, *, method: str, seed: int, swd: dict[int, float]) -> dict:
    """The record with another method name, seed and swd per NFE (the config and its hash stay valid)."""
    new = copy.deepcopy(record)
    new["method"], new["seed"] = method, seed
    new["code"] = {"commit": "c0ffee" + "0" * 34, "dirty": False}  # as if run from a clean checkout
    for ev in new["evaluations"]:
        ev["metrics"]["swd"] = swd[ev["nfe"]]
    return new


def test_a_run_directory_becomes_a_record_with_every_field_the_schema_asks_for(record):
    validate_record(record)
    assert record["preset"] == "flow_matching" and record["data"] == "toy:8gaussians"
    assert record["compute"]["steps"] == 12 and record["compute"]["images_seen"] == 12 * record["compute"]["batch_size"]
    assert record["compute"]["wall_time_s"] > 0
    assert record["protocol"]["metrics"]["toy2d"]["implementation"].startswith("flowzoo.eval.toy_metrics")
    assert record["code"]["commit"] is None or len(record["code"]["commit"]) == 40
    assert record["versions"]["torch"]
    assert [c["step"] for c in record["curve"]][-1] == 12
    assert record["schedules"]["step"][-1] == 12 and set(record["schedules"]["fm_ratio"]) == {1.0}


@pytest.mark.parametrize("corrupt, phrase", [
    (lambda r: r.pop("seed"), "required field 'seed' is missing"),
    (lambda r: r.update(seed="0"), "field 'seed' has type str"),
    (lambda r: r.update(schema="flowzoo.result/0"), "expected 'flowzoo.result/1'"),
    (lambda r: r["compute"].pop("wall_time_s"), "compute.wall_time_s is missing"),
    (lambda r: r["evaluations"][0]["metrics"].update(swd="low"), "is not a number"),
    (lambda r: r["evaluations"].clear(), "evaluations is empty"),
    (lambda r: r["protocol"].pop("metrics"), "protocol.metrics"),
    (lambda r: r["config"]["train"].update(steps=13), "config_hash does not match"),
])
def test_an_invalid_record_is_one_sentence_naming_the_problem(record, corrupt, phrase):
    bad = copy.deepcopy(record)
    corrupt(bad)
    with pytest.raises(RecordError) as info:
        validate_record(bad)
    assert phrase in str(info.value)


def test_loading_reports_corrupt_and_duplicate_records_and_merges_nothing_silently(record, tmp_path):
    write_record(tmp_path / "a.json", variant(record, method="fm", seed=0, swd={1: 0.3, 2: 0.2}))
    write_record(tmp_path / "b.json", variant(record, method="fm", seed=0, swd={1: 0.3, 2: 0.2}))  # identical copy
    write_record(tmp_path / "c.json", variant(record, method="fm", seed=0, swd={1: 0.9, 2: 0.9}))  # conflicting
    write_record(tmp_path / "d.json", variant(record, method="fm", seed=1, swd={1: 0.4, 2: 0.3}))
    (tmp_path / "torn.json").write_text('{"schema": "flowzoo.result/1", "method"')
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    loaded = load_records(tmp_path)
    assert [(r["method"], r["seed"]) for r in loaded.records] == [("fm", 0), ("fm", 1)]
    assert loaded.records[0]["evaluations"][0]["metrics"]["swd"] == 0.3  # the first in path order wins
    problems = "\n".join(loaded.problems())
    assert "torn.json is not valid JSON" in problems and "other.json is not a valid result record" in problems
    assert "b.json: duplicate of" in problems and "an identical result" in problems
    assert "c.json: duplicate of" in problems and "a DIFFERENT result" in problems
    with pytest.raises(RecordError, match="not valid JSON"):
        read_record(tmp_path / "torn.json")


def test_tables_give_mean_interval_and_std_over_seeds_and_bold_the_best_per_nfe(record, tmp_path):
    values = {"fm": [(0.30, 0.20), (0.34, 0.10), (0.29, 0.15)], "mf": [(0.10, 0.40), (0.14, 0.45), (0.12, 0.41)]}
    results = tmp_path / "results"
    for method, rows in values.items():
        for seed, (one, two) in enumerate(rows):
            write_record(results / f"{method}-{seed}.json", variant(record, method=method, seed=seed, swd={1: one, 2: two}))
    _, written = build_leaderboard(results, tmp_path / "lb")
    text = (tmp_path / "lb" / "README.md").read_text()
    for method, rows in values.items():
        column = [r[0] for r in rows]  # 1 NFE: the detail table
        mean, std = statistics.mean(column), statistics.stdev(column)  # independent of flowzoo's mean_std
        assert f"{mean:.3f} ± {std:.3f}" in text  # one format: the std at the mean's decimals
    fm_line = next(line for line in text.splitlines() if line.startswith("| fm (flow_matching)"))
    mf_line = next(line for line in text.splitlines() if line.startswith("| mf (flow_matching)"))
    # the ranking table: mean [95% Student-t interval], mean +- t_{0.975, 2} s / sqrt(3) with t = 4.302653
    half = lambda xs: 4.302653 * statistics.stdev(xs) / 3 ** 0.5  # noqa: E731
    assert f"**0.120 [{0.12 - half([0.10, 0.14, 0.12]):.3f}, {0.12 + half([0.10, 0.14, 0.12]):.3f}]**" in mf_line  # best at 1 NFE
    assert f"**0.150 [{0.15 - half([0.20, 0.10, 0.15]):.3f}, {0.15 + half([0.20, 0.10, 0.15]):.3f}]**" in fm_line  # best at 2 NFE
    assert "| 0.300 / 0.340 / 0.290 |" in fm_line and "| 0.300 |" in fm_line  # seed by seed; the median
    assert "| 12 | 3,072 | 1.00 / 0.00 / 1.00 |" in fm_line  # steps, images seen, passes per step
    # the paired comparison to the reference (the first row, fm): mf is lower on every seed at 1 NFE
    mf_vs = next(line for line in text.splitlines() if line.startswith("| mf (flow_matching) | 3 |"))
    assert "| better |" in mf_vs and "| worse |" in mf_vs  # 1 NFE: lower swd; 2 NFE: higher on every seed
    assert "Provenance: 6 records; commit c0ffee00;" in text
    assert any(p.name.endswith("-nfe.png") for p in written) and any(p.name.endswith("-compute.png") for p in written)


def test_dirty_records_are_left_out_of_rankings_unless_allowed_and_then_marked(record, tmp_path):
    results = tmp_path / "results"
    write_record(results / "clean.json", variant(record, method="fm", seed=0, swd={1: 0.3, 2: 0.2}))
    dirty = variant(record, method="fm", seed=1, swd={1: 0.9, 2: 0.9})
    dirty["code"]["dirty"] = True
    write_record(results / "dirty.json", dirty)
    loaded = load_records(results)
    assert [r["seed"] for r in loaded.records] == [0] and "dirty.json: trained from a dirty tree" in loaded.problems()[0]
    build_leaderboard(results, tmp_path / "lb", allow_dirty=True)
    fm_line = next(line for line in (tmp_path / "lb" / "README.md").read_text().splitlines() if line.startswith("| fm (flow_matching)"))
    assert "| 0,1* |" in fm_line
    assert "1 from dirty trees" in (tmp_path / "lb" / "README.md").read_text()


def test_records_with_another_protocol_are_never_ranked_together(record, tmp_path):
    other = variant(record, method="mf", seed=0, swd={1: 0.01, 2: 0.01})
    other["protocol"]["metrics"]["toy2d"]["num_samples"] = 500  # measured differently
    same = variant(record, method="fm", seed=0, swd={1: 0.3, 2: 0.2})
    groups = group_records([same, other])
    assert len(groups) == 2 and protocol_id(same) != protocol_id(other)
    assert [[row.method for row in g.rows] for g in groups] in ([["fm"], ["mf"]], [["mf"], ["fm"]])


def test_the_html_page_is_self_contained_and_reported_rows_are_marked(record, tmp_path):
    results = tmp_path / "results"
    write_record(results / "a.json", variant(record, method="fm", seed=0, swd={1: 0.3, 2: 0.2}))
    build_leaderboard(results, tmp_path / "lb")
    page = (tmp_path / "lb" / "index.html").read_text()
    assert "data:image/png;base64," in page
    assert not re.search(r"""(src|href)=['"](https?:|//|plots/)""", page) and "<link" not in page
    assert page.count("<script") == 1 and "<script>" in page  # one inline script (column sorting), nothing fetched
    text = (tmp_path / "lb" / "README.md").read_text()
    alpha_flow_row = next(line for line in text.splitlines() if line.startswith("| alpha-Flow | XL/2+"))
    assert "2.58" in alpha_flow_row and "reported, not reproduced" in alpha_flow_row and "**" not in alpha_flow_row


def test_leaderboard_cli_reports_problems_and_strict_fails_on_them(record, tmp_path, capsys):
    code, _, err = flowzoo("leaderboard", "build", "--results", str(tmp_path / "none"), capsys=capsys)
    assert code == 2 and "no results folder" in err and len(err.strip().splitlines()) == 1
    results = tmp_path / "results"
    write_record(results / "a.json", variant(record, method="fm", seed=0, swd={1: 0.3, 2: 0.2}))
    (results / "b.json").write_text("not json")
    code, out, err = flowzoo("leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "lb"), capsys=capsys)
    assert code == 0 and "1 records (1 invalid" in out and "b.json is not valid JSON" in err
    assert "b.json is not valid JSON" in (tmp_path / "lb" / "README.md").read_text()
    code, _, _ = flowzoo("leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "lb"), "--strict", capsys=capsys)
    assert code == 1


def test_two_samplers_at_one_nfe_are_two_rows_never_pooled(record, tmp_path):
    """A run evaluated with two samplers: each (method, sampler) is its own row with one value per seed,
    and the paired comparison pairs like with like (issue 29: pooling gave n = 6 from 3 seeds)."""
    results = tmp_path / "results"
    for seed in range(3):
        rec = variant(record, method="fm", seed=seed, swd={1: 0.30 + 0.01 * seed, 2: 0.20})
        extra = copy.deepcopy(rec["evaluations"])
        for ev in extra:
            ev["sampler"] = "heun"
            ev["metrics"]["swd"] = 0.90 + 0.01 * seed
        rec["evaluations"] += extra
        write_record(results / f"fm-{seed}.json", rec)
    groups = group_records(load_records(results).records)
    rows = groups[0].rows
    assert [(r.method, r.sampler) for r in rows] == [("fm", "euler"), ("fm", "heun")]
    assert rows[0].values(1, "swd") == pytest.approx([0.30, 0.31, 0.32])  # n = 3, not 6
    assert rows[1].by_seed(1, "swd") == pytest.approx({0: 0.90, 1: 0.91, 2: 0.92})  # not the last sampler's
    build_leaderboard(results, tmp_path / "lb")
    text = (tmp_path / "lb" / "README.md").read_text()
    assert "| fm (flow_matching) [heun] | 3 |" in text  # compared with the reference row (fm with euler) seed by seed
    assert "Provenance: 3 records;" in text  # each record once, though it sits in two rows


def test_records_carry_the_hardware_and_torch_honours_aten_cpu_capability(record):
    import os
    import subprocess
    import sys

    import torch

    hw = record["hardware"]
    assert hw["cpu_model"] and hw["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    probe = "from flowzoo.pipeline.provenance import hardware; print(hardware()['cpu_capability'])"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "DEFAULT", out.stderr[-500:]


def test_cuda_hardware_names_gpu_driver_cuda_and_cudnn(monkeypatch):
    import torch

    from flowzoo.leaderboard.provenance import hardware_label
    from flowzoo.pipeline import provenance

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(provenance, "gpu_driver", lambda: "580.65.06")
    hw = provenance.hardware("cuda:0")
    assert (hw["gpu_name"], hw["gpu_driver"], hw["cuda"], hw["cudnn"]) == ("NVIDIA H100 80GB HBM3", "580.65.06", "13.0", "91002")
    assert hardware_label({"hardware": hw}).startswith("NVIDIA H100 80GB HBM3, driver 580.65.06, CUDA 13.0, cuDNN 91002; host ")


def other_config(record: dict, tag: str) -> None:
    """Another training config (and its hash): not the same cell as the fixture's."""
    from flowzoo.leaderboard.record import config_hash_of

    record["config"] = {**record["config"], "name": tag}
    record["config_hash"] = config_hash_of(record["config"])


def test_tables_say_their_budget_and_mark_mixed_hardware_seed_by_seed(record, tmp_path):
    """Old records (no hardware) load and say so; a table mixing machines names them and their seeds; the
    same cell (config, seed) on other hardware is set beside the seed spread; each table names its budget."""
    machine = {"cpu_model": "AMD EPYC", "cpu_id": "AuthenticAMD family 25 model 17 stepping 1", "machine": "x86_64"}
    results = tmp_path / "results"
    for seed, (cap, swd) in enumerate([("AVX512", 0.30), ("AVX512", 0.34), ("DEFAULT", 0.29)]):
        r = variant(record, method="fm", seed=seed, swd={1: swd, 2: 0.2})
        r["hardware"] = {**machine, "cpu_capability": cap}
        write_record(results / f"fm-{seed}.json", r)
    old = variant(record, method="mf", seed=0, swd={1: 0.1, 2: 0.2})
    old.pop("hardware", None)  # a record from before records carried the hardware
    other_config(old, "meanflow")
    write_record(results / "mf-0.json", old)
    twin = variant(record, method="fm", seed=0, swd={1: 0.35, 2: 0.2})  # fm seed 0 again, under DEFAULT kernels
    twin["benchmark"], twin["hardware"] = "unit-cpu-default", {**machine, "cpu_capability": "DEFAULT"}
    write_record(results / "twin" / "fm-0.json", twin)
    flops = variant(record, method="fm", seed=0, swd={1: 0.3, 2: 0.2})
    flops["benchmark"] = "unit-flops"
    flops["compute"]["budget"] = {"equal": "flops", "reference": "fm", "reference_steps": 12,
                                  "reference_train_flops": 1.5e9, "steps": 12}
    other_config(flops, "flops")
    write_record(results / "flops" / "fm-0.json", flops)
    loaded, _ = build_leaderboard(results, tmp_path / "lb")
    assert len(loaded.records) == 6 and not loaded.problems()
    text = (tmp_path / "lb" / "README.md").read_text()
    unit = text.split("## unit\n", 1)[1].split("\n## ", 1)[0]
    assert ("Mixed hardware: this table's records ran on 3 different machines or kernel sets "
            "(AMD EPYC (family 25 model 17), AVX512: fm seeds 0-1; AMD EPYC (family 25 model 17), DEFAULT: fm seeds 2; "
            "hardware not recorded: mf seeds 0)") in unit
    assert "hardware not recorded" in unit.split("Provenance: ", 1)[1]
    assert "Budget: equal optimizer steps at equal batch" in unit
    assert "Same cell on other hardware: 1 pairs, |Δ swd| mean 0.050" in unit
    assert "| fm | 0 | AMD EPYC (family 25 model 17), AVX512 | 0.300 | AMD EPYC (family 25 model 17), DEFAULT (unit-cpu-default) | 0.350 | +0.050 |" in unit
    assert "Budget: equal estimated training FLOPs, those of fm at 12 steps" in text.split("## unit-flops\n", 1)[1]
    assert "Mixed hardware" not in text.split("## unit-flops\n", 1)[1].split("\n## ", 1)[0]
    assert "equal estimated training FLOPs" in (tmp_path / "lb" / "index.html").read_text()


def test_the_collapse_column_judges_only_the_suites_few_step_samplers(record):
    """A flow-matching model under one Euler step draws its blurred conditional mean by design; a suite whose
    collapse rule names its few-step samplers marks such a row "not judged" instead of "collapsed"."""
    from types import SimpleNamespace

    from flowzoo.bench.suite import Collapse
    from flowzoo.leaderboard.tables import ranking_table

    records = [variant(record, method="fm", seed=s, swd={1: 9.0, 2: 1.0}) for s in (0, 1)]
    for r in records:
        r["reference"] = {"real/swd": 0.1}  # every 1-step swd is 90x the real samples'
    column = {}
    for samplers in ((), ("meanflow",)):
        suite = SimpleNamespace(reference_method="fm", collapse=Collapse("real/swd", 5.0, samplers), methods=[])
        (group,) = group_records(records, None, {"unit": suite})
        table = ranking_table(group)
        index = next(i for i, h in enumerate(table.headers) if h.startswith("collapsed @ 1 NFE"))
        column[samplers] = table.rows[0][index]
    assert column[()] == "2/2"  # judged: both runs are 90x the real samples' swd, over the 5x threshold
    assert column[("meanflow",)] == "n/a (euler: not judged)"
