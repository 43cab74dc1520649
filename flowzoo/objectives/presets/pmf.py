from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

pmf = register_preset(
    "pmf",
    ObjectiveConfig(
        time_sampler={"name": "logit_normal", "mean": -0.4, "std": 1.0},
        fm_ratio=0.75,  # fraction of the batch with r = t (MeanFlow's)
        alpha=0.0,
        weighting={"name": "adaptive", "c": 1e-2, "p": 1.0, "reduction": "sum"},
        jvp="forward",
    ),
    """pMF, pixel MeanFlow (Lu et al. 2026, arXiv 2601.22158): MeanFlow's loss with a clean-data network.

    The network predicts x^(z_t, r, t) and is read as u = (z_t - x^) / t, so the loss, the JVP target and
    the sampler stay in velocity space (DESIGN.md §2): the objective is MeanFlow's, and the difference is
    the output parameterisation, set by configs/objective/pmf.yaml as backbone.prediction = x (any
    backbone; flowzoo.backbones.prediction). Not carried over: pMF's perceptual loss, its Muon optimiser
    and its pixel-space architecture; on digits and latents this preset tests the parameterisation alone.""",
)
