"""The published methods as named configurations of the one unified objective (no copied math).

Each preset registers a builder ``build(net, total_steps=None, **overrides) -> UnifiedObjective`` in
the objective registry; ``builder.default_config`` holds its defaults. Third-party objectives register
any callable of the same shape through the ``flowzoo.objectives`` entry-point group.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from flowzoo.objectives.unified import ObjectiveConfig, UnifiedObjective
from flowzoo.registry import OBJECTIVES


def register_preset(
    name: str, config: ObjectiveConfig, doc: str, sampler: str = "meanflow", fixed_point: str = "average"
) -> Callable[..., UnifiedObjective]:
    """Register ``name`` as ``config`` of the unified objective; ``sampler`` is the one its samples use.

    ``fixed_point`` says what the objective converges to where it is exact: "average" (the average
    velocity u(z_t, r, t) of the flow, every few-step method) or "instantaneous" (u(z_t, r, t) = v(z_t, t)
    for every r: trajectory flow matching). The registry-wide fixed-point test checks it.
    """
    def build(net: nn.Module, total_steps: int | None = None, **overrides) -> UnifiedObjective:
        return UnifiedObjective(net, config.replace(**overrides), total_steps=total_steps)

    build.__name__ = name
    build.__doc__ = doc
    build.default_config = config  # type: ignore[attr-defined]
    build.default_sampler = sampler  # type: ignore[attr-defined]
    build.fixed_point = fixed_point  # type: ignore[attr-defined]
    OBJECTIVES.add(name, build)
    return build


from flowzoo.objectives.presets import (  # noqa: E402,F401  (registration side effects)
    alphaflow,
    consistency,
    flow_matching,
    meanflow,
    shortcut,
    trajectory_fm,
    imf,
    soflow,
    tim,
    scm,
    pmf,
    ect,
)
