"""SplitMeanFlow (Guo et al. 2025, arXiv 2507.16884, Algorithm 1): interval splitting, no JVP.

The additivity of displacements, (t - r) u(z_t, r, t) = (t - s) u(z_t, s, t) + (s - r) u(z_s, r, s)
with s = (1 - lambda) t + lambda r and z_s = z_t - (t - s) u(z_t, s, t), is the unified two-point target
with alpha = lambda and the model's shift velocity v~ = u-(z_t, s, t): (t - s) = alpha (t - r), so
u_tgt = alpha u-(z_t, s, t) + (1 - alpha) u-(z_s, r, s). lambda ~ U(0, 1) per sample (flowzoo's
`uniform` alpha); Shortcut is the case lambda = 1/2 (with a dyadic grid and an EMA target). Plain MSE,
stop-gradient online target. fm_ratio 0.5: the paper trains the boundary condition u(z_t, t, t) = v on
part of each batch (25-50%); this takes the upper end. Times: uniform pairs (t = max, r = min).

Shipped as a plugin, not a built-in, to show that a new method needs no change to flowzoo: the whole
method is a configuration of flowzoo's unified objective, found through this package's entry point.
"""

from flowzoo.objectives.unified import ObjectiveConfig, UnifiedObjective

DEFAULT_CONFIG = ObjectiveConfig(
    time_sampler="uniform",
    fm_ratio=0.5,  # fraction of the batch with r = t
    alpha={"name": "uniform", "low": 0.0, "high": 1.0},  # lambda, the split point
    shift="model",  # v~ = u-(z_t, s, t), the model's first sub-interval
    weighting="uniform",
    target_network="online",
)


def build(net, total_steps=None, **overrides):
    """SplitMeanFlow (Guo et al. 2025): interval splitting with lambda ~ U(0, 1), no JVP (a plugin).

    ``overrides`` are the run's ``--set objective.KEY=VALUE`` options (ObjectiveConfig fields)."""
    return UnifiedObjective(net, DEFAULT_CONFIG.replace(**overrides), total_steps=total_steps)


build.default_config = DEFAULT_CONFIG
build.default_sampler = "meanflow"  # u(z_t, r, t) steps: z_r = z_t - (t - r) u
build.fixed_point = "average"  # what the registry-wide fixed-point test checks it against
