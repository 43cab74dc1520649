"""The page says which rows ran an earlier config than their suite asks for now (a preset's defaults moved)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from flowzoo.bench.suite import Cell, get_suite
from flowzoo.config import config_hash
from flowzoo.leaderboard.aggregate import group_records
from flowzoo.leaderboard.staleness import stale_note, stale_records

RESULTS = Path(__file__).resolve().parents[1] / "leaderboard" / "results" / "toy" / "toy-8gaussians"


def _records_for(suite, method: str, seeds: list[int]) -> list[dict]:
    """Committed toy records of ``method``, their config hash set to what the suite asks for now."""
    out = []
    for seed in seeds:
        record = json.loads((RESULTS / f"{method}-s{seed}.json").read_text())
        spec = next(m for m in suite.methods if m.name == method)
        record["config_hash"] = config_hash(Cell(suite, spec, "toy:8gaussians", seed).resolved_config(Path(".")))
        out.append(record)
    return out


def test_rows_that_ran_the_suites_current_config_get_no_note():
    suite = get_suite("toy")
    records = _records_for(suite, "meanflow", [0, 1, 2]) + _records_for(suite, "flow_matching", [0, 1, 2])
    (group,) = group_records(records, {"toy": suite.rank_by}, {"toy": suite})
    assert stale_records(group, suite) == {} and stale_note(group, suite) is None


def test_a_record_of_an_earlier_config_is_named_with_its_seeds():
    suite = get_suite("toy")
    records = _records_for(suite, "meanflow", [0, 1, 2]) + _records_for(suite, "flow_matching", [0, 1, 2])
    earlier = copy.deepcopy(records[1])
    earlier["config_hash"] = "0" * 64  # the hash of some other config: e.g. the preset before its defaults moved
    records[1] = earlier
    (group,) = group_records(records, {"toy": suite.rank_by}, {"toy": suite})
    assert stale_records(group, suite) == {"meanflow": [1]}
    note = stale_note(group, suite)
    assert "meanflow (seeds 1)" in note and "flowzoo bench toy" in note and "flow_matching" not in note
