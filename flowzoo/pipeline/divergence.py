"""A divergence alarm on the 1-NFE training curve: a run says in its own log when it is collapsing.

MeanFlow-style objectives can collapse at 1 NFE while their loss looks fine and their 2- and 4-NFE samples
stay good (flowzoo's digits MeanFlow seed 1 under the earlier per-element weight: 1-NFE FD 7.7 at step
3,000, 69 at 6,000, 342 at 7,000). The curve hook measures the EMA network at 1 NFE every
train.sample_every steps; this alarm compares each point with the best one so far and names the symptom
once the metric is `factor` times worse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The metric the alarm watches per metric family, and whether lower is better (as the leaderboard ranks).
WATCHED = (("fd", True), ("fid", True), ("fvd", True), ("swd", True))


def watched_metric(metrics: dict[str, float]) -> tuple[str, bool] | None:
    return next(((name, lower) for name, lower in WATCHED if name in metrics), None)


@dataclass
class DivergenceAlarm:
    factor: float = 3.0
    best: float | None = None
    best_step: int | None = None
    raised: list[str] = field(default_factory=list)

    def update(self, step: int, metrics: dict[str, float]) -> str | None:
        """The alarm sentence when this point is `factor` x worse than the best so far (else None)."""
        watched = watched_metric(metrics)
        if watched is None:
            return None
        name, lower = watched
        value = float(metrics[name])
        if value != value:  # NaN: the samples themselves are not finite
            message = f"divergence alarm at step {step}: the 1-NFE {name} is NaN (non-finite samples from the EMA network)"
            self.raised.append(message)
            return message
        if self.best is None or (value < self.best if lower else value > self.best):
            self.best, self.best_step = value, step
            return None
        ratio = value / self.best if lower else self.best / value if value else float("inf")
        if self.best > 0 and ratio >= self.factor:
            message = (f"divergence alarm at step {step}: the EMA network's 1-NFE {name} is {value:.4g}, {ratio:.1f}x "
                       f"its best {self.best:.4g} (step {self.best_step}); 1-NFE sampling is collapsing "
                       f"(eval_curve.jsonl has every point)")
            self.raised.append(message)
            return message
        return None
