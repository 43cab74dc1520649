from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

meanflow = register_preset(
    "meanflow",
    ObjectiveConfig(
        time_sampler={"name": "logit_normal", "mean": -0.4, "std": 1.0},
        fm_ratio=0.75,  # fraction of the batch with r = t (MeanFlow's 25% r != t)
        alpha=0.0,
        weighting={"name": "adaptive", "c": 1e-3, "p": 1.0},
        jvp="forward",
    ),
    """MeanFlow (Geng et al. 2025): alpha = 0, the JVP target u_tgt = v - (t - r) d/dt u-(z_t, r, t).

    Tangents (v, 0, 1) on (z, r, t); adaptive weight 1/(||Delta||^2 + c)^p with c = 1e-3, p = 1 on the
    per-element scale (recipes.yaml, the alpha-Flow code's MeanFlow runs); fm_ratio = 0.75. For the
    CFG-trained runs set shift={name: cfg, omega: ..., kappa: ...}.""",
)
