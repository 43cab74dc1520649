"""Which budget a table holds equal: optimizer steps at equal batch, or estimated training FLOPs.

A suite's `compare_at` decides it (flowzoo.bench.suite, flowzoo.bench.budget) and each record says which it
ran under in ``compute.budget`` ({"equal": "steps"} or {"equal": "flops", "reference": ..., "steps": ...}).
Records written before budgets were recorded all come from equal-steps suites (`compare_at: steps` was the
only choice), so a record without one counts as equal steps.
"""

from __future__ import annotations

from typing import Any

from flowzoo.leaderboard.aggregate import Group

LABELS = {"steps": "equal optimizer steps at equal batch", "flops": "equal estimated training FLOPs"}


def budget_of(record: dict[str, Any]) -> dict[str, Any]:
    budget = record.get("compute", {}).get("budget")
    return budget if isinstance(budget, dict) and budget.get("equal") else {"equal": "steps"}


def budget_line(group: Group) -> str:
    """One sentence: what the group's methods share, and what differs between them because of it."""
    kinds = sorted({budget_of(r)["equal"] for row in group.rows for r in row.records})
    if len(kinds) > 1:
        return ("Budget: MIXED (" + ", ".join(LABELS.get(k, k) for k in kinds) + "): these rows did not train "
                "under one budget; compare them with care.")
    if kinds == ["flops"]:
        first = budget_of(group.rows[0].records[0])
        steps = ", ".join(f"{method} {steps}" for method, steps in {row.method: _steps(row) for row in group.rows}.items())
        return (f"Budget: {LABELS['flops']}, those of {first.get('reference')} at {first.get('reference_steps'):,} steps "
                f"({first.get('reference_train_flops', 0):.3g} FLOPs; passes per step x forward FLOPs, backward = 2 and "
                f"JVP = 2 forwards): each method trains the steps that spend them (rounded to the nearest step): {steps}.")
    return (f"Budget: {LABELS['steps']} (the same images seen); a step's FLOPs and wall time differ by objective, "
            "so both are shown.")


def _steps(row) -> str:
    steps = sorted({int(r["compute"]["steps"]) for r in row.records})
    return "/".join(f"{s:,}" for s in steps)
