"""The unified alpha-Flow objective, its parts and the presets.

``alpha_target`` is the public math; ``UnifiedObjective`` the training module; presets are registered
in ``flowzoo.registry.OBJECTIVES`` and built with ``create_objective``.
"""

import inspect

from flowzoo.config import ConfigError
from flowzoo.objectives import jvp, schedules, shift, time_samplers, weighting  # noqa: F401  (registration)
from flowzoo.objectives import weighting_ect  # noqa: F401  (registers the ect weighting)
from flowzoo.objectives.target import AlphaTarget, alpha_target, alpha_target_parts, loss_decomposition
from flowzoo.objectives.unified import ObjectiveConfig, UnifiedObjective
from flowzoo.objectives.velocity import ConditionedVelocity
from flowzoo.objectives import presets  # noqa: F401,E402  (registers the presets)
from flowzoo.registry import OBJECTIVES


def create_objective(name: str, net, total_steps: int | None = None, **overrides):
    """Build the registered objective ``name`` around the network ``net``.

    An override the builder does not take is refused in one sentence, for a plugin's builder as for a
    preset's (presets check theirs against ObjectiveConfig; a plugin's signature is checked here)."""
    builder = OBJECTIVES.get(name)
    try:
        inspect.signature(builder).bind(net, total_steps=total_steps, **overrides)
    except TypeError:
        params = [p for p in inspect.signature(builder).parameters.values()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)][1:]
        valid = sorted(p.name for p in params if p.name != "total_steps")
        unknown = sorted(set(overrides) - set(valid))
        raise ConfigError(f"unknown objective option(s) {', '.join(unknown) or '(none)'} for objective '{name}'; "
                          f"valid: {', '.join(valid) or 'none'}.") from None
    except ValueError:  # no signature to check (some builtins): let the call decide
        pass
    return builder(net, total_steps=total_steps, **overrides)


__all__ = [
    "AlphaTarget", "ConditionedVelocity", "ObjectiveConfig", "UnifiedObjective",
    "alpha_target", "alpha_target_parts", "create_objective", "loss_decomposition",
]
