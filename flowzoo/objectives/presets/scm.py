from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

scm = register_preset(
    "scm",
    ObjectiveConfig(
        # TrigFlow's tau = arctan(e^n / sigma_d), n ~ N(-1.0, 1.6), is the linear-path time
        # t = sigmoid(n - ln sigma_d): mean -1.0 - ln 0.5 = -0.307, std 1.6 (see the docstring).
        time_sampler={"name": "consistency", "mean": -0.307, "std": 1.6, "t_min": 1e-3},
        fm_ratio=0.0,  # fraction of the batch with r = t: none, every sample maps to r = 0
        alpha=0.0,
        shift="data",
        weighting={"name": "tangent_normalised", "c": 0.1},
        jvp="forward",
        target_network="online",
    ),
    """sCM, continuous-time consistency (Lu & Song 2024), mapped onto the linear path: r = 0, alpha = 0.

    Paper: "Simplifying, Stabilizing and Scaling Continuous-Time Consistency Models". The mapping. TrigFlow's x_tau = cos(tau) x + sin(tau) z (sigma_d scaling aside) is a rescaled point of
    the linear path: x_tau / (cos tau + sin tau) = z_t with t = sin tau / (cos tau + sin tau). Its
    consistency function is the x0-parameterised f(z_t, t) = z_t - t u(z_t, 0, t) of the consistency
    preset, and continuous-time CT (df/dt = 0 along the path) is exactly the unified JVP branch with
    r = 0: u_tgt = v - t d/dt u-(z_t, 0, t), alpha = 0 (the alpha -> 0 limit of the consistency preset's
    shrinking step, reached analytically instead of by the ct_discrete schedule). sCM's stabiliser, tangent
    normalisation g / (||g|| + c), c = 0.1, is the tangent_normalised weight, which makes the gradient
    2 Delta / (||Delta||_2 + c). sCM's proposal density (log-normal on tan tau, P_mean -1.0, P_std 1.6,
    sigma_d 0.5) becomes the logit-normal time above. Not carried over: TrigFlow's own parameterisation
    and time embedding (c_noise), the learned adaptive weight w_phi(t), tangent warm-up and the
    prior weight 1/(sigma_d tan tau); those change the scale per time, not the fixed point.""",
    sampler="consistency",  # x0 = z_t - t u(z_t, 0, t), re-noised between steps
)
