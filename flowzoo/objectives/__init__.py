"""The unified alpha-Flow objective, its parts and the presets.

``alpha_target`` is the public math; ``UnifiedObjective`` the training module; presets are registered
in ``flowzoo.registry.OBJECTIVES`` and built with ``create_objective``.
"""

from flowzoo.objectives import jvp, schedules, shift, time_samplers, weighting  # noqa: F401  (registration)
from flowzoo.objectives.target import AlphaTarget, alpha_target, alpha_target_parts, loss_decomposition
from flowzoo.objectives.unified import ObjectiveConfig, UnifiedObjective
from flowzoo.objectives.velocity import ConditionedVelocity
from flowzoo.objectives import presets  # noqa: F401,E402  (registers the presets)
from flowzoo.registry import OBJECTIVES


def create_objective(name: str, net, total_steps: int | None = None, **overrides):
    """Build the registered objective ``name`` around the network ``net``."""
    return OBJECTIVES.get(name)(net, total_steps=total_steps, **overrides)


__all__ = [
    "AlphaTarget", "ConditionedVelocity", "ObjectiveConfig", "UnifiedObjective",
    "alpha_target", "alpha_target_parts", "create_objective", "loss_decomposition",
]
