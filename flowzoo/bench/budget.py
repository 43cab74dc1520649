"""Equal-FLOPs budgets (a suite's ``compare_at: flops``): the steps that spend the reference method's FLOPs.

Per sample and step a method costs, in FLOPs (as the records estimate it, flowzoo.leaderboard.compute_cost),

    C = F x (forward + 2 backward + 2 JVP)      F: forward FLOPs of the backbone for one sample,
                                                 passes per step measured by running the objective;

so the reference method R at the suite's S_R steps of batch B_R spends C_R x B_R x S_R FLOPs, and method m
gets
    S_m = round(S_R x B_R x C_R / (B_m x C_m))   (to the nearest step, halves up).

A schedule that moves samples between branches (alpha-Flow's sigmoid) is laid out over the run, so its
average passes depend on the run's length a little: S_m is iterated until the passes measured over S_m
steps give S_m again (at most a few rounds; deterministic, since the pass counts are seeded). Everything else
(data, batch, evaluation) is the suite's, the same for every method.
"""

from __future__ import annotations

import math
from typing import Any

from flowzoo.config import ConfigError

ROUNDS = 4  # fixed-point rounds for schedules whose passes depend on the run length


def cost_per_sample_step(cfg: dict[str, Any], total_steps: int) -> dict[str, Any]:
    """{"passes_per_step", "forward_flops_per_sample", "flops_per_sample_step"} of a resolved run config."""
    from flowzoo.bench.estimate import data_shape, forward_flops
    from flowzoo.leaderboard.compute_cost import passes_per_step, train_flops

    shape, num_classes, _ = data_shape(cfg)
    spec = dict(cfg["objective"])
    name = spec.pop("name")
    passes = passes_per_step(name, spec, int(total_steps), num_classes=max(num_classes, 1))
    flops = forward_flops(cfg, shape, num_classes)
    return {"passes_per_step": passes, "forward_flops_per_sample": flops,
            "flops_per_sample_step": train_flops(passes, flops, 1, 1)}


def round_steps(value: float) -> int:
    """To the nearest step, halves up (not Python's round-half-even), at least 1."""
    return max(1, int(math.floor(value + 0.5)))


def equal_flops_budget(suite, method, data: str) -> dict[str, Any]:
    """The compute.budget of `method`'s cells on `data` in an equal-FLOPs suite: its steps and their arithmetic."""
    from flowzoo.bench.suite import Cell

    reference = suite.flops_reference or next((m for m in suite.methods if m.name == suite.reference_method), None)
    if reference is None:
        raise ConfigError(f"suite '{suite.name}' compares at equal FLOPs but its reference_method "
                          f"{suite.reference_method!r} is not one of its methods.")
    seed = suite.seeds[0]
    ref_cfg = Cell(suite, reference, data, seed).resolved_config(".", budget=False)
    ref_steps, ref_batch = int(ref_cfg["train"]["steps"]), int(ref_cfg["train"]["batch_size"])
    ref_cost = cost_per_sample_step(ref_cfg, ref_steps)
    target = ref_cost["flops_per_sample_step"] * ref_batch * ref_steps
    out = {"equal": "flops", "reference": reference.name, "reference_steps": ref_steps, "reference_batch_size": ref_batch,
           "reference_passes_per_step": ref_cost["passes_per_step"], "reference_train_flops": target,
           "rounding": "nearest step", "flops_estimate": "passes per step x forward FLOPs; backward = 2, JVP = 2 forwards"}
    if method.name == reference.name:
        return {**out, "steps": ref_steps, "batch_size": ref_batch, **_spent(ref_cost, ref_batch, ref_steps)}
    cfg = Cell(suite, method, data, seed).resolved_config(".", budget=False)
    batch = int(cfg["train"]["batch_size"])
    steps = ref_steps
    for _ in range(ROUNDS):
        cost = cost_per_sample_step(cfg, steps)
        new = round_steps(target / (batch * cost["flops_per_sample_step"]))
        if new == steps:
            break
        steps = new
    else:  # no fixed point within ROUNDS: the last count, with the passes measured over it
        cost = cost_per_sample_step(cfg, steps)
    return {**out, "steps": steps, "batch_size": batch, **_spent(cost, batch, steps)}


def _spent(cost: dict[str, Any], batch: int, steps: int) -> dict[str, Any]:
    return {"passes_per_step": cost["passes_per_step"], "forward_flops_per_sample": cost["forward_flops_per_sample"],
            "flops_per_sample_step": cost["flops_per_sample_step"], "train_flops": cost["flops_per_sample_step"] * batch * steps}
