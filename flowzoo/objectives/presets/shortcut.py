from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

shortcut = register_preset(
    "shortcut",
    ObjectiveConfig(
        time_sampler={"name": "dyadic", "levels": 6},
        fm_ratio=0.875,  # fraction of the batch with r = t: Shortcut bootstraps 1/8 of each batch
        alpha=0.5,
        shift="model",
        weighting="uniform",
        target_clamp=4.0,
        target_network="ema",
    ),
    """Shortcut models (Frans et al. 2024): alpha = 1/2 with the model's own shift velocity.

    s = (r + t)/2, v~ = u-(z_t, s, t), z_s = z_t - (t - s) v~, and u_tgt = (v~ + u-(z_s, r, s)) / 2: the
    average of two half steps, from the EMA network, clipped to +-4. Step sizes t - r are dyadic
    (1 ... 1/64, so half steps reach 1/128); 1/8 of each batch bootstraps, the rest is flow matching.""",
)
