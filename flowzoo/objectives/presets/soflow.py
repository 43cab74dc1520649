from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

soflow = register_preset(
    "soflow",
    ObjectiveConfig(
        time_sampler={"name": "logit_normal", "mean": -0.4, "std": 1.0},
        fm_ratio=0.75,  # fraction of the batch with r = t (SoFlow's lambda = 0.75 Flow Matching share)
        alpha={"name": "exponential", "start": 0.1, "end": 0.002, "start_frac": 0.0, "end_frac": 1.0},
        shift="data",
        weighting={"name": "inverse_alpha_adaptive", "c": 1e-2, "p": 0.5},
        target_network="online",
    ),
    """SoFlow, Solution Flow Models (Luo, Yuan & Liu 2025, arXiv 2512.15657): FM plus JVP-free consistency.

    SoFlow learns f(x_t, t, s) = x_t + (s - t) F(x_t, t, s); in flowzoo's convention (t = 1 noise, r the
    target time) f = z_t - (t - r) u(z_t, r, t). Its consistency loss ||f(z_t, t, r) - sg f(z_l, l, r)||^2
    with l = t + (r - t) rho_k and z_l = z_t - (t - l) v is (t - r)^2 ||u - u_tgt||^2 with
    u_tgt = rho v + (1 - rho) u-(z_l, r, l): the unified two-point target with alpha = rho, s = l and the
    data velocity. rho_k falls exponentially 0.1 -> 0.002 over the run (the paper's best schedule), so
    SoFlow is an alpha-Flow curriculum that stops short of the JVP. Its weight
    1/((t - l)(t - r)) / (||f - f-||^2/(t - l)^2 + c)^p becomes (1/alpha) / (||Delta||^2/alpha^2 + c)^p,
    flowzoo's inverse_alpha_adaptive, with p = 0.5 and c = 0.01; at r = t (alpha = 1) it is SoFlow's Flow
    Matching weight 1/(||Delta||^2 + c)^p. The two losses are averaged over the batch as L = lambda L_FM +
    (1 - lambda) L_SCM, lambda = fm_ratio = 0.75. Settings as read in the paper and in the public PyTorch
    port lucidrains/rectified-flow-pytorch (soflow.py). Difference, on purpose: SoFlow draws t and r from
    separate logit-normals (t: 0.2, 0.8; r: -1.0, 0.8, then r = min(r, t)); flowzoo keeps MeanFlow's
    sorted logit-normal(-0.4, 1) pairs so that the zoo compares objectives at one time density.""",
)
