from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

shortcut = register_preset(
    "shortcut",
    ObjectiveConfig(
        time_sampler={"name": "dyadic", "levels": 6, "stratified": True},
        # Fraction of the batch trained as flow matching: Shortcut bootstraps 1/8 of each batch. These rows
        # are trained at the finest step h = 1/128 (r = t - 1/128, not r = t), on the 128-point grid.
        fm_ratio=0.875,
        fm_times={"name": "grid_step", "steps": 128},
        alpha=0.5,
        shift="model",
        label_dropout_on="flow_matching",
        weighting="uniform",
        target_clamp=4.0,
        intermediate_clamp=4.0,
        target_network="ema",
    ),
    """Shortcut models (Frans et al. 2024): alpha = 1/2 with the model's own shift velocity.

    s = (r + t)/2, v~ = u-(z_t, s, t), z_s = z_t - (t - s) v~, and u_tgt = (v~ + u-(z_s, r, s)) / 2: the
    average of two half steps, from the EMA network.

    Follows the official code (kvfrans/shortcut-models at 6010043, targets_shortcut.py get_targets):
    - 1/8 of each batch bootstraps: its steps t - r are dyadic, 1 ... 1/64 with n // 7 rows per level and
      the remainder at 1 (stratified), t uniform on the multiples of the step; the half steps reach 1/128;
    - the other 7/8 are flow matching on the data velocity at the finest step h = 1/128 (r = t - 1/128, t
      uniform on the 128-point grid: fm_times grid_step), the level the finest bootstrap queries, so every
      level a target asks for is one that training fits (flowzoo before issue 25 trained them at h = 0 with
      the bootstrap rows' dyadic t: `fm_times: null` with `time_sampler: {name: dyadic, levels: 6}`);
    - the intermediate point z_s and the bootstrap target are both clipped to +-4 (intermediate_clamp,
      target_clamp); flow-matching targets are not;
    - labels drop (p = 0.1) on flow-matching rows only (label_dropout_on flow_matching).
    Differences that remain: the code's path (1 - (1 - 1e-5) t) x0 + t x1 keeps 1e-5 of noise at the data
    end (flowzoo's path is exact); its network takes the level log2(1/h) where flowzoo's takes h; its
    bootstrap_cfg option (guided bootstrap targets, off by default) is not built.""",
)
