from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

ect = register_preset(
    "ect",
    ObjectiveConfig(
        time_sampler={"name": "lognormal_sigma", "mean": -1.1, "std": 2.0},  # ECT's P_mean, P_std of ln sigma
        fm_ratio=0.0,  # fraction of the batch with r = t: none, every sample maps to r = 0
        alpha={"name": "ect", "q": 2.0, "k": 8.0, "b": 1.0, "stages": 8},
        shift="data",
        label_dropout=0.0,  # ECT passes its labels through unchanged (no CFG training)
        weighting={"name": "ect", "c": 0.0},
        jvp="forward",  # unused: alpha > 0 on every sample
        target_clamp=None,
        target_network="online",  # ECT's D_yr is the online network under no_grad
    ),
    """ECT, Easy Consistency Tuning (Geng et al. 2024): its official training loss, in the x0 form.

    Paper: "Consistency Models Made Easy". Follows locuslab/ect @ 4311059: training/loss.py ``ECMLoss`` (``__call__``, ``t_to_r_sigmoid``,
    ``update_schedule``), training/ct_training_loop.py (the stage grows every ``double_ticks``),
    ct_train.py's defaults and run_ecm.sh (CIFAR-10: 8 stages of 25,000 iterations).

    The mapping. EDM's x_sigma = x + sigma e is the linear path divided by 1 - t, sigma = t / (1 - t), and
    ECT's data estimate D(x_sigma, sigma) is flowzoo's f(z_t, t) = z_t - t u(z_t, 0, t) (r = 0 on every
    sample). ECT's pair (sigma, sigma_r) with shared noise is (t, s) on the same path, s = sigma_r /
    (1 + sigma_r), so alpha = (t - s) / t and the two-point target z_t - t u_tgt = f-(z_s, s), with
    f-(z_0, 0) = x (alpha = 1) where ECT clamps r to 0 and uses the data. The parts:
    - lognormal_sigma: sigma = exp(N(-1.1, 2.0)), i.e. t = sigmoid(N(-1.1, 2.0)), unclamped;
    - ect schedule: a = q^-(stage+1) (1 + k sigmoid(-b sigma)), q 2, k 8, b 1, alpha = a (1 - t) / (1 - a t)
      (a clipped to 1); at stage 2 alpha runs from 0.62 (t -> 0) down toward 0 at t -> 1, where the
      generic ``consistency`` preset's ct_discrete (b on t, alpha = a) stays in 0.40-0.62;
    - ect weighting: ECT's per-sample (sqrt(||D_t - D_r||_2^2 + c^2) - c) / (sigma_t - sigma_r), the norm
      summed over elements and unsquared (c = 0), as a detached weight with exactly its gradient; the
      batch mean as in ECT's loop.

    What remains different, and why:
    - the network parameterisation: ECT's D = c_skip x_sigma + c_out F(c_in x_sigma, ln(sigma)/4) (EDM
      preconditioning, sigma_data 0.5; ECMPrecond) is a backbone choice; flowzoo's backbones predict u and
      embed (t, h). The loss and its gradient with respect to D are ECT's (tested with an EDM-
      preconditioned network); sigma_data enters only the preconditioning, so it is not an option here.
    - the logged loss is the weight times the mean squared error: L / 2 for c = 0, not L's value.
    - ECT shares the dropout mask of D_t and D_r (it resets the CUDA RNG); flowzoo's backbones have no
      dropout. ECT starts from a pretrained EDM model (--transfer); the preset does not load one.
    - ECT's tick 0 is one iteration, so its stages start one iteration later than step // stage_steps.
    - t is stored in float32: near t = 1 (sigma > 100, 0.2% of draws) t - s is resolved to ~1e-3
      relative, where ECT's sigma units are exact.
    - sampling: ECT starts at sigma_max = 80 (t = 0.988) and its eval preconditioning has the
      sigma_min = 0.003 boundary; the consistency sampler starts at t = 1 (pure noise).
    ``consistency`` is the generic discrete CT; this preset is ECT's code.""",
    sampler="consistency",  # x0 = z_t - t u(z_t, 0, t), re-noised between steps
)
