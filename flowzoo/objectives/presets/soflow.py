from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

soflow = register_preset(
    "soflow",
    ObjectiveConfig(
        # Consistency pairs (t, r) as SoFlow's code draws them, unsorted; r > t collapses to r = t - 1e-4.
        time_sampler={"name": "soflow", "t_mean": 0.2, "t_std": 0.8, "r_mean": -1.0, "r_std": 0.8, "min_gap": 1e-4},
        fm_ratio=0.75,  # fraction of the batch with r = t (SoFlow's velocity_loss_ratio 0.75)
        fm_times={"name": "logit_normal_single", "mean": -0.2, "std": 1.0},  # the r = t rows' own time draw
        alpha={"name": "exponential", "start": 0.1, "end": 0.002, "start_frac": 0.0, "end_frac": 1.0,
               "min_gap": 1e-4},
        shift={"name": "cfg", "omega": 0.75, "kappa": 0.75, "dropped": "data", "decay_time": 0.8},
        label_dropout=0.1,
        weighting={"name": "inverse_alpha_adaptive", "c": 1e-2, "p": 1.0, "consistency_scale": 0.5},
        target_network="online",
    ),
    """SoFlow, Solution Flow Models (Luo, Yuan & Liu 2025, arXiv 2512.15657): FM plus JVP-free consistency.

    Follows the official code, zlab-princeton/SoFlow @ 3b60d60 (models.py Soflow.get_velocity_loss,
    get_consistency_loss, get_middle_time, get_cfg_decay_scale; train.py Learner.train; imagenet.yaml).

    SoFlow learns f(x_t, t, s) = x_t + (s - t) F(x_t, t, s); in flowzoo's convention (t = 1 noise, r the
    target time) f = z_t - (t - r) u(z_t, r, t). Its consistency pair l = t + (r - t) rho, z_l = z_t - (t - l) v~
    gives dq = (f(z_t, t, r) - sg f(z_l, l, r)) / (t - l) = -(u - u_tgt) / alpha with alpha = (t - l)/(t - r)
    and u_tgt = alpha v~ + (1 - alpha) u-(z_l, r, l): the unified two-point target with s = l. rho falls
    exponentially 0.1 -> 0.002 over the run (l_schedule Exponent), and l = min(l, t - 1e-4) (the
    schedule's min_gap: alpha = max(rho, 1e-4 / (t - r))).

    Loss, per the code: L = (n_FM / B) L_FM + (n_C / B) L_C, so every row counts 1/B. Flow-matching rows
    (r = t, 75%: fm_ratio, the code's velocity_loss_ratio) regress sg(w) ||u - v~||^2, w = 1/(||Delta||^2 + c)^p;
    consistency rows take L_C = -mean(u * sg(w dq)) (sign of b(t, s) = s - t), whose gradient is
    w Delta / (alpha D): half that of w ||Delta||^2 / alpha, which is what the code's comment calls the same
    gradient. flowzoo writes both as inverse_alpha_adaptive, (1/alpha)/(||Delta/alpha||^2 + c)^p, times
    consistency_scale 0.5 on the r < t rows; p = 1.0 and c = 0.01 (imagenet.yaml p, eps), ||.||^2 a mean
    over elements as in the code.

    Times (train.py): flow-matching rows t ~ sigmoid(N(-0.2, 1)) (fm_times); consistency rows
    t ~ sigmoid(N(0.2, 0.8)) clipped at 1e-4 and r ~ sigmoid(N(-1.0, 0.8)), r = min(r, t - 1e-4), unsorted
    (the ``soflow`` time sampler). When the r draw lands above t (14.4% of the pairs) r = t - 1e-4 and
    alpha = 1: the pair is a flow-matching target at h = 1e-4 with the consistency rows' half weight.

    CFG in training (imagenet.yaml cfg_scale 3.0, mix_ratio 0.25, cfg_drop_rate 0.1, cfg_decay_time 0.8):
    the code's v~ = m (v + d (w - 1)(v - u-(null))) + (1 - m) u-(c), all at (z_t, t, t), is the cfg shift
    with omega = m w = 0.75, kappa = 1 - m = 0.75 (effective scale 3) and decay_time 0.8 (d(t)); every t
    is guided (no interval); a dropped label (10%, every row) trains on v with the null label (dropped: data).

    Named options (flowzoo's choices before issue 25): weighting consistency_scale 1.0 (the squared form,
    consistency weighted 2x against flow matching) with p 0.5; time_sampler {name: logit_normal, mean: -0.4,
    std: 1.0} with fm_times null (MeanFlow's sorted pairs, r = t rows the larger of a pair: the zoo used
    them to compare objectives at one time density); shift data (unguided training, as the code's CIFAR-10
    config). Differences that remain: the code's flow-matching rows are the first int(0.75 B) of the batch,
    flowzoo's round(0.75 B) random rows (the same count at B = 256); the code's multi-step sampling jumps
    to t = 0 and re-noises, a sampler choice outside the objective; its Euler/Linear parameterisation is
    the only one here (its Trig options are not); the code's float32 pairs round l and s alike, flowzoo
    snaps a gap within 1e-3 relative of 1e-4 to alpha = 1 (the same collapse).""",
)
