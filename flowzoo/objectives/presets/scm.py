from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

scm = register_preset(
    "scm",
    ObjectiveConfig(
        # rcm draws log(tan tau) ~ N(p_mean, p_std) with sigma_d = 1, i.e. the linear-path time
        # t = tan tau / (1 + tan tau) = sigmoid(N(-0.8, 1.6)), and never clips t from below.
        time_sampler={"name": "consistency", "mean": -0.8, "std": 1.6, "t_min": 0.0},
        fm_ratio=0.0,  # fraction of the batch with r = t: none, every sample maps to r = 0
        alpha=0.0,
        shift="data",
        label_dropout=0.0,  # rcm's conditioner is "text_nodrop" (dropout_rate 0.0)
        weighting={"name": "trigflow_tangent_normalised", "c": 0.1, "scale": 100.0},
        jvp="forward",
        target_network="online",
    ),
    """sCM, continuous-time consistency (Lu & Song 2024), as NVlabs/rcm trains it, on the linear path: r = 0, alpha = 0.

    Paper: "Simplifying, Stabilizing and Scaling Continuous-Time Consistency Models". Code followed:
    NVlabs/rcm, rcm/models/t2v_model_distill_rcm.py, T2VDistillModel_rCM._student_scm_step (commit
    5b41aa9), with the data velocity cos(tau) e - sin(tau) x in place of its teacher's F (sCT instead of
    sCD); time draw from rcm/utils/timestep_utils.py (LogNormal, rf_to_trig_time), output scaling from
    rcm/utils/denoiser_scaling.py (RectifiedFlow_TrigFlowWrapper, which asserts sigma_d = 1).

    The mapping. TrigFlow's x_tau = cos(tau) x + sin(tau) e is a rescaled point of the linear path:
    x_tau / (cos tau + sin tau) = z_t with t = sin tau / (cos tau + sin tau). rcm's network sees exactly
    z_t and returns a velocity u, its clean-data estimate is f = z_t - t u(z_t, 0, t) (the consistency
    preset's x0 form), and its F = (cos tau - sin tau) z_t + u / (cos tau + sin tau). Continuous-time CT
    (df/dtau = 0 along the data path) is the unified JVP branch with r = 0: u_tgt = v - t d/dt u-(z_t, 0, t),
    alpha = 0. sCM's tangent g = cos(tau) df/dtau = -cos(tau) Delta / (cos tau + sin tau)^2 is normalised,
    g / (||g||_2 + 0.1), and the loss 100 ||F - sg(F) - g_normalised||^2 is summed over elements: the
    trigflow_tangent_normalised weight gives flowzoo's per-element-mean squared error exactly that gradient
    (its docstring has the derivation). The time draw is sigmoid(N(-0.8, 1.6)) (rcm's p_G default; its
    Wan 2.1 experiments set p_mean 0.7 for 1.3B and 1.5 for 14B, a shift toward noise for 480p video).
    No label dropout and no CFG: rcm's guidance acts on its teacher, which sCT does not have.

    Named options: weighting {name: tangent_normalised, c: 0.1} normalises Delta itself (gradient
    2 Delta / (||Delta||_2 + 0.1), whatever t), the preset's weight before issue 25; "scale" sets rcm's
    loss_scale (the global gradient size: with Adam it matters only through eps and gradient clipping).

    What still differs from rcm: rcm sums the per-sample losses over each GPU's batch (trainer_distillation
    .training_step, loss_i.sum()), flowzoo averages them, so results do not depend on how a batch is split
    (DESIGN.md §4); rcm's Wan runs have batch 1 per GPU, where the two agree. Not carried over: the tangent
    warm-up (rcm's default 0 steps, its Wan 1.3B run 1000), which mixes x_tau into g on its own and needs
    the TrigFlow pieces apart from Delta; the NaN masking of rows (flowzoo's loop skips a non-finite step);
    the finite-difference tangents (fd_type 1 and 2; flowzoo's finite_difference jvp is a different
    stencil); the time embedding c_noise = 1000 t (flowzoo feeds t raw, DESIGN.md §1); rcm's upper clip
    of t at 1 - 2.2e-16 (float64 epsilon), never reached by flowzoo's draws; rcm's DMD and fake-score
    steps, which are the distillation half of rCM.""",
    sampler="consistency",  # x0 = z_t - t u(z_t, 0, t), re-noised between steps
)
