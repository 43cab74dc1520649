from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

trajectory_fm = register_preset(
    "trajectory_fm",
    ObjectiveConfig(fm_ratio=0.0, alpha=1.0, weighting="uniform"),
    """Trajectory flow matching, the L_TFM half of MeanFlow (AlphaFlow, ICLR 2026, Sec. 3).

    alpha = 1 with r < t: the target of the average velocity u(z_t, r, t) is the data velocity v, with no
    network call; fm_ratio = 0 (no r = t samples). Its minimiser ignores r (it learns E[v | z_t]), which
    is why it is the curriculum's start and not a few-step model on its own.""",
    fixed_point="instantaneous",
)
