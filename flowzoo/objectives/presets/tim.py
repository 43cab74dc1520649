from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

tim = register_preset(
    "tim",
    ObjectiveConfig(
        time_sampler={"name": "logit_normal", "mean": -0.4, "std": 1.0, "r_zero_ratio": 0.2},
        fm_ratio=0.5,  # fraction of the batch with r = t (TiM's diffusion_ratio 0.5)
        alpha=0.0,
        shift="data",
        weighting={"name": "tim", "sigma_d": 1.0, "c": 1e-5, "time": "sqrt", "tangent": True},
        jvp={"name": "finite_difference", "eps": 0.005},
        target_network="online",
    ),
    """TiM, Transition Models (Wang et al. 2025, arXiv 2509.04394; WZDTHU/TiM, tim/schedulers/transition.py).

    On the linear path (its OT_FM transport, the ImageNet-256 config) TiM's transition identity is
    MeanFlow's: F_target = v - (t - r) dF/dt. It takes the total derivative by a central finite
    difference along the path ("dde", epsilon = 0.005) instead of a JVP: the unified JVP branch with the
    finite_difference backend at eps 0.005, three plain forwards and no forward-mode AD. Its weight is
    sg(1/(||Delta||^2 + 1e-5)) / sqrt(tan t - tan r + sigma_d) (sigma_d = 1; 1 at r = t); times are
    sorted logit-normal(-0.4, 1) pairs, r = t on half the batch (diffusion_ratio 0.5), and r = 0 on a
    tenth (consistency_ratio 0.1: r_zero_ratio 0.2 of the batch before fm_ratio takes its half).
    Not carried over: TiM's decoupled time embeddings and REPA projection loss (backbone matters),
    and its stochastic sampler; flowzoo samples it with the MeanFlow sampler.""",
)
