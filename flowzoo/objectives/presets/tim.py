from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

tim = register_preset(
    "tim",
    ObjectiveConfig(
        time_sampler={"name": "logit_normal", "mean": -0.4, "std": 1.0, "r_zero_ratio": 0.2},
        fm_ratio=0.5,  # fraction of the batch with r = t (TiM's diffusion_ratio 0.5)
        alpha=0.0,
        shift="data",
        label_dropout=0.1,
        weighting={"name": "tim", "sigma_d": 1.0, "c": 1e-5, "time": "sqrt", "tangent": True},
        jvp={"name": "finite_difference", "eps": 0.005},
        target_network="online",
        directional_loss=1.0,  # the trainer's use_dir_loss=True
    ),
    """TiM, Transition Models (Wang et al. 2025, arXiv 2509.04394). Follows WZDTHU/TiM at commit b431859:
    tim/schedulers/transition.py (TransitionSchedule: sample_t_and_r, dde_derivative, time_weighting,
    adaptive_weighting, __call__), tim/schedulers/transports.py (OT_FM: sample_t, interpolant, target),
    projects/train/trainer_c2i.py (label dropout, use_dir_loss=True) and configs/c2i/tim_xl_p2_256.yaml.

    On the linear path (OT_FM, the ImageNet-256 config) TiM's transition target is MeanFlow's:
    F_target = v - (t - r) dF/dt, the total derivative by a central difference along the data path
    ("dde", epsilon 0.005): (F(z_t + eps v, r, t + eps) - F(z_t - eps v, r, t - eps)) / (2 eps) with
    v = e - x, r held fixed, the online network under no-grad and the sample's label after dropout. That
    is the unified JVP branch with the finite_difference backend at eps 0.005. Per sample,

        err = mean((F - F_target)^2) + mean over pixels of (1 - cos_C(F, F_target))     (use_dir_loss)
        loss = mean_b  g(t, r) err / (sg(err) + 1e-5),   g = 1/sqrt(tan t - tan r + sigma_d), 1 at r = t

    with the cosine over channels (torch's cosine_similarity, eps 1e-8: directional_loss = 1), sigma_d = 1
    and the adaptive denominator taking the directional term too (the ``tim`` weighting, no power).
    Times: sorted sigmoid(N(-0.4, 1)) pairs; r = t on half the batch (diffusion_ratio 0.5), r = 0 on a
    tenth (consistency_ratio 0.1, T_min 0); labels dropped to null with p = 0.1 on every sample.

    Differences that remain:
    - r = 0 count: TiM sets r = 0 on exactly round(0.1 B) rows disjoint from its round(0.5 B) r = t rows;
      flowzoo draws r = 0 on 0.2 B random rows before fm_ratio picks its half, so the per-sample marginal
      is the same (P(r = 0, r < t) = 0.1) but the count per batch varies (hypergeometric, mean 0.1 B).
    - not carried over: the REPA projection loss (proj_coeff 1 against RADIO features: needs an encoder
      and a projector head), TiM's decoupled time embeddings (backbone), its nan_to_num guards on the
      per-sample losses, and its stochastic sampler (flowzoo samples with the MeanFlow sampler).
    - the guided recipe (tim_xl_p2_256_mg.yaml, enhance_target): v~ = v + 0.75 (F_ema(c) - F_ema(null))
      for 0.3 <= t <= 0.8, the EMA network with the undropped label, while the finite difference stays
      along the data path e - x. flowzoo's cfg shift takes its derivative along v~ unless tangent is
      set: shift {name: cfg, omega: 1, kappa: 0.75, t_min: 0.3, t_max: 0.8, drop_outside_interval: true}
      with tangent: data gives TiM's guided target, up to the closed interval ends, the guidance network
      (flowzoo's one target network, online here) and the guidance label (flowzoo's after dropout). The
      default here is TiM's unguided ImageNet-256 recipe, where the two paths coincide (v~ = v).
    - on single-channel data (digits, 1x8x8) the channel cosine is a sign: the directional term has zero
      gradient almost everywhere and only enlarges the adaptive denominator, as TiM's code would do.
      Its minimiser is not exactly the conditional mean either: where the per-sample target is random
      the cosine pulls toward the mean direction, so the exact average velocity is TiM's fixed point
      only with directional_loss 0.""",
)
