from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

imf = register_preset(
    "imf",
    ObjectiveConfig(
        time_sampler={"name": "logit_normal", "mean": -0.4, "std": 1.0},
        fm_ratio=0.5,  # fraction of the batch with r = t (iMF's data_proportion 0.5)
        alpha=0.0,
        shift="data",
        tangent="instantaneous",
        # 10% of the batch, all on the r = t half (the code's cond_drop drops the first rows, which sample_tr
        # made the r = t rows): 0.2 of those rows = label_dropout 0.1 / fm_ratio 0.5.
        label_dropout=0.2,
        label_dropout_on="flow_matching",
        weighting={"name": "adaptive", "c": 1e-2, "p": 1.0, "reduction": "sum"},
        jvp="forward",
    ),
    """iMF, improved MeanFlow (Geng et al. 2025, "Improved Mean Flows"; JAX code Lyy-iiis/imeanflow, imf.py).

    alpha = 0 (MeanFlow's JVP branch) with the tangent switched: the total derivative is taken along the
    model's own instantaneous velocity, tangents (u-(z_t, t, t), 0, 1), while the anchor stays the data
    velocity. iMF writes it as a v-loss, V = u + (t - r) sg(du/dt) regressed on v; since du/dt is under
    stop-gradient, its gradient is exactly that of ||u - (v - (t - r) sg(du/dt))||^2, the unified target
    with v~ = v and w = u-(z_t, t, t). Code settings kept (Lyy-iiis/imeanflow at bf60cd7, imf.py
    sample_tr, cond_drop): logit-normal(-0.4, 1) pairs sorted into (t, r) with r = t on half the batch
    (the r = t rows keep the larger draw, fm_times null), adaptive weight on the per-sample sum (norm_eps
    0.01, norm_p 1), and label dropout as cond_drop does it: Binomial(B, 0.1) drops applied to the first
    rows, which are the r = t rows, so an r < t row never loses its label; here each r = t row drops with
    0.2 (the same expected count; the count's spread is Binomial(B/2, 0.2)). `label_dropout: 0.1,
    label_dropout_on: all` is flowzoo's choice before issue 25.
    Differences, on purpose: flowzoo has no auxiliary v-head (the r = t output u(z_t, t, t) is the v the
    paper's head-free variant uses, trained by the r = t half); iMF's tangent is conditional on the
    undropped label, flowzoo's on the label after dropout; iMF's guidance-as-condition (the CFG scale
    and interval as backbone inputs, with the guided target v + (1 - 1/omega)(v_c - v_u)) is not in
    flowzoo: the backbones take no guidance input yet, so this preset is iMF's unguided objective.""",
)
