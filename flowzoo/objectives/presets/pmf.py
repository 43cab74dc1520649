from flowzoo.objectives.presets import register_preset
from flowzoo.objectives.unified import ObjectiveConfig

T_CLIP = 0.05  # pMF's floor on t wherever it divides by t: u = (z - x^)/t, v = (z - x^_v)/t and v_t = (z - x)/t

pmf = register_preset(
    "pmf",
    ObjectiveConfig(
        # Pairs of logit-normal(0.8, 0.8) draws, t = the larger (the r < t rows); the flow-matching rows take
        # one draw of their own (r = t), so their median t is sigmoid(0.8).
        time_sampler={"name": "logit_normal", "mean": 0.8, "std": 0.8},
        fm_times={"name": "logit_normal_single", "mean": 0.8, "std": 0.8},
        fm_ratio=0.5,  # fraction of the batch with r = t (pMF's data_proportion 0.5)
        alpha=0.0,
        shift={"name": "data", "t_min": T_CLIP},  # v_t = (z_t - x) / max(t, 0.05)
        tangent="instantaneous",  # the model's own v = (z_t - x^(z_t, t, t)) / max(t, 0.05)
        # 10% of the batch, all on the r = t half: 0.2 of those rows (= label_dropout / fm_ratio).
        label_dropout=0.2,
        label_dropout_on="flow_matching",
        weighting={"name": "adaptive", "c": 1e-2, "p": 1.0, "reduction": "sum"},
        jvp="forward",
    ),
    """pMF, pixel MeanFlow (Lu et al. 2026, arXiv 2601.22158): iMF's objective with a clean-data network.

    Follows Lyy-iiis/pMF at 75f6073: pmf.py, pixelMeanFlow.forward (with sample_tr, cond_drop,
    guidance_fn), models/pmfDiT.py pmfDiT.__call__, and configs/pMF_B_16_config.yml (ImageNet-256).
    The network predicts x^ and is read as u = (z_t - x^) / max(t, 0.05) (configs/objective/pmf.yaml sets
    backbone.prediction x and backbone.prediction_t_min 0.05; flowzoo.backbones.prediction). With
    c(t) = max(t, 0.05), per sample:

        v_t = (z_t - x) / c(t)                                   the anchor (shift data, t_min 0.05)
        w   = (z_t - x^(z_t, t, t)) / c(t), stop-gradient        the JVP tangent: the model's predicted v
        V   = u(z_t, r, t) + (t - r) sg(d/dt u(z_t, r, t)),       JVP with tangents (w, 0, 1) on (z, r, t)
        loss = mean_b  S_b / sg(S_b + 0.01),   S_b = sum over elements of (V - v_t)^2

    Since d/dt u is under stop-gradient, ||V - v_t||^2 has exactly the gradient of ||u - u_tgt||^2 with
    u_tgt = v_t - (t - r) d/dt u-, the unified JVP target with v~ = v_t and tangent w (iMF, presets/imf.py);
    the weight is the adaptive one on the per-sample sum (norm_eps 0.01, norm_p 1). Times: the r < t rows
    sort two logit-normal(0.8, 0.8) draws, the r = t rows (data_proportion 0.5) keep a single draw (the
    code sets r = t before sorting). Label dropout: cond_drop draws Binomial(B, 0.1) drops and applies them
    to the first rows, which are the r = t rows, so r < t rows keep their labels; here each r = t row drops
    with 0.2 = 0.1 / 0.5 (the same expected count; the count's spread is Binomial(B/2, 0.2), not
    Binomial(B, 0.1), and the code's drops spill onto r < t rows only when the count passes B/2).

    What remains different (flowzoo cannot express it yet, or leaves it out on purpose):
    - No v-head. pMF's DiT has two heads over shared blocks (aux_head_depth 8); the tangent w is the
      v-head's output at h = 0 with the undropped label, and a second loss, the v-head at h = t - r
      regressed on v_t with the same adaptive weight, is added. flowzoo takes w from the u-head at
      h = 0 (the head-free choice; a dropped row is an r = t row, whose tangent is unused) and has no
      v-head loss: both need a second output head.
    - No guidance conditioning: pMF feeds the CFG scale omega (density ~ omega^-cfg_beta on [1, 8],
      cfg_beta 1 for B/16, 2 for L/16) and a guidance interval (t_min ~ U(0, 0.5), t_max ~ U(0.5, 1);
      (0, 1) on r = t rows) as network inputs and trains on v_g = v_t + (1 - 1/omega)(v_c - v_u), with v_c,
      v_u from the v-head; flowzoo's backbones take no guidance input, so this is pMF's objective at
      omega = 1 (v_g = v_t).
    - pMF's DiT embeds h = t - r only (t enters only through the division); flowzoo's backbones embed
      both t and h, so d/dt also sees the t input.
    - Perceptual losses: LPIPS (lambda 0.4) and a ConvNeXt feature distance (lambda 0.1) on
      x^ = z_t - t u against x, after a shared random resized crop to 224, only where t < 0.8, each with
      its own adaptive weight (utils/auxloss_util.py). Not carried over: they need pretrained feature
      networks and RGB pixels; on digits and latents this preset tests the objective without them.
    - Training recipe, not objective: the Muon optimiser (lr 1e-3), EDM-style multiple EMAs, pixel-space
      patch-16 DiT with a bottleneck patch embedder and in-context tokens.""",
)
