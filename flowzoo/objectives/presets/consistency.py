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
    """Generic discrete consistency training (Song et al. 2023) in the x0 parameterisation.

    No one paper's official code: the ``ect`` preset is ECT's (locuslab/ect training/loss.py).

    r = 0 and f(z_t, t) = z_t - t u(z_t, 0, t). alpha = (t - t')/t makes s = t' and the two-point target
    z_t - t u_tgt = f-(z_t', t'): discrete CT. The ct_discrete step, borrowed in shape from ECT's mapping
    but with b acting on t in [0, 1] and alpha = the ratio itself, shrinks q-fold per stage, so alpha -> 0
    over training: continuous-time CT. The loss is the squared error ||f - f-||^2 divided by the step
    t - t' (weight t/alpha = t^2/(t - t')), in flowzoo's t, not ECT's unsquared L2 norm over sigma_t - sigma_r.""",
    sampler="consistency",  # x0 = z_t - t u(z_t, 0, t), re-noised between steps
)
