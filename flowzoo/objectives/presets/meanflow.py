from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

meanflow = register_preset(
    "meanflow",
    ObjectiveConfig(
        time_sampler={"name": "logit_normal", "mean": -0.4, "std": 1.0},
        fm_ratio=0.75,  # fraction of the batch with r = t (MeanFlow's 25% r != t)
        alpha=0.0,
        weighting={"name": "adaptive", "c": 1e-2, "p": 1.0, "reduction": "sum"},
        jvp="forward",
    ),
    """MeanFlow (Geng et al. 2025): alpha = 0, the JVP target u_tgt = v - (t - r) d/dt u-(z_t, r, t).

    Tangents (v, 0, 1) on (z, r, t); fm_ratio = 0.75. Follows MeanFlow's official code: the adaptive weight
    1/(||Delta||^2 + c)^p (Sec. 4.3) on the per-sample *sum* of squares with c = 0.01, p = 1.0 (the ImageNet
    setting of the official JAX code, reference/recipes.yaml; the paper's Table 1 ablation picks p = 1).
    Named alternative: MeanFlow as trained inside the alpha-Flow code (that paper's baselines) reduces by the per-element mean with c = 1e-3, which is
    weighting={name: adaptive, c: 1.0e-3, p: 1.0, reduction: mean}. For the CFG-trained runs set
    shift={name: cfg, omega: ..., kappa: ..., t_min: ..., t_max: ...}.""",
)
