from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

consistency = register_preset(
    "consistency",
    ObjectiveConfig(
        time_sampler={"name": "consistency", "mean": -0.4, "std": 1.0},
        fm_ratio=0.0,  # fraction of the batch with r = t: none, every sample maps to r = 0
        alpha={"name": "ct_discrete", "q": 2.0, "k": 8.0, "b": 1.0},
        weighting="consistency",
        target_network="online",
    ),
    """Consistency training (Song et al. 2023; ECT, Geng et al. 2024) in the x0 parameterisation.

    r = 0 and f(z_t, t) = z_t - t u(z_t, 0, t). alpha = (t - t')/t makes s = t' and the two-point target
    z_t - t u_tgt = f-(z_t', t'): discrete CT; ECT's shrinking step sends alpha -> 0 over training, which
    is continuous-time CT. Weighted t/alpha = t^2/(t - t'), ECT's 1/(t - r) with squared L2.""",
    sampler="consistency",  # x0 = z_t - t u(z_t, 0, t), re-noised between steps
)
