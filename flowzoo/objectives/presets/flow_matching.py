from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

flow_matching = register_preset(
    "flow_matching",
    ObjectiveConfig(
        time_sampler={"name": "logit_normal_single", "mean": -0.4, "std": 1.0},
        fm_ratio=1.0,  # fraction of the batch with r = t: all of it
        alpha=1.0,
        weighting="uniform",
    ),
    """Flow Matching / rectified flow (Lipman et al. 2023; Liu et al. 2023).

    alpha = 1 and fm_ratio = 1 (every sample has r = t): the target is the data velocity v = e - x and
    the loss is ||u(z_t, t, t) - v||^2. Times from the logit-normal(-0.4, 1) sampler (recipes.yaml).""",
    sampler="euler",  # trained on r = t only: u(z, t, t) is an instantaneous velocity
)
