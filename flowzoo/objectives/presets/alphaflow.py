from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

alphaflow = register_preset(
    "alphaflow",
    ObjectiveConfig(
        time_sampler={"name": "logit_normal", "mean": -0.4, "std": 1.0},
        fm_ratio=0.5,  # fraction of the batch with r = t (alphaflow-B/2 recipe)
        # The r = t rows draw their own single time (the code's time_sampling_fm), not the larger of a pair.
        fm_times={"name": "logit_normal_single", "mean": -0.4, "std": 1.0},
        alpha={"name": "sigmoid", "start_frac": 0.0, "end_frac": 1.0, "gamma": 25.0, "eta": 5e-3},
        weighting={"name": "alpha_adaptive", "c": 1e-3, "p": 1.0},
        target_clamp=4.0,
        jvp="forward",
    ),
    """alpha-Flow (Zhang et al., "AlphaFlow: Understanding and Improving MeanFlow Models", ICLR 2026).

    s = alpha r + (1 - alpha) t with alpha annealed by the sigmoid curriculum from 1 (trajectory flow
    matching) to 0 (MeanFlow) over the whole run (k_s = 0, k_e = last step, gamma = 25, eta = 5e-3);
    weighted alpha/(||Delta||^2 + c) with ||Delta||^2 the per-element mean. fm_ratio = 0.5 (the B/2 recipe).

    Follows the official code (snap-research/alphaflow, src/training/loss.py AlphaFlowLoss): only the
    two-point targets of r < t samples with 0 < alpha < 1 are clamped to +-4 (_compute_mean_velocity_d);
    r = t samples are never clamped. Times as its sample_traj_params draws them: the fm_ratio rows (r = t)
    take one logit-normal(-0.4, 1) draw each (median sigmoid(-0.4) = 0.401), the others the max and min of
    two draws; `fm_times: null` gives the r = t rows the larger of a pair instead (median 0.538: flowzoo's
    choice before issue 25, and MeanFlow's code's). Checked against commit b0fef77. With CFG (the -cfg recipes) labels drop only inside the guidance
    interval and dropped samples get the guided mix with the null prediction (_compute_velocity_cfg);
    flowzoo's earlier choices are the shift options `dropped: data` and `drop_outside_interval: true`.""",
)
