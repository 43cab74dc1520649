"""Per-sample loss weights w(alpha, ||Delta||^2, t, r), always detached.

||Delta||^2 is the per-sample *mean* over elements (DESIGN.md §1), so c is on the per-element scale.
Which preset uses which: flow_matching, trajectory_fm, shortcut -> uniform; meanflow -> adaptive;
alphaflow -> alpha_adaptive (the official code); consistency -> consistency; ect -> ect (weighting_ect.py).
inverse_alpha_adaptive is the adaptive weight that stays continuous as alpha -> 0 (the digits benchmark's
alphaflow uses it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowzoo.registry import WEIGHTINGS


def _inverse_alpha(alpha: Tensor) -> Tensor:
    # alpha = 0 is the limit taken analytically (the JVP target), where the 1/alpha is already absorbed.
    return torch.where(alpha > 0, 1.0 / alpha.clamp(min=1e-12), torch.ones_like(alpha))


@WEIGHTINGS.register("uniform")
class Uniform:
    """w = 1: plain mean squared error."""

    def __call__(self, alpha: Tensor, sq_err: Tensor, t: Tensor, r: Tensor) -> Tensor:
        return torch.ones_like(alpha)


@WEIGHTINGS.register("inverse_alpha")
class InverseAlpha:
    """w = 1/alpha: the paper's L_alpha, whose gradient tends to MeanFlow's as alpha -> 0 (error O(alpha))."""

    def __call__(self, alpha: Tensor, sq_err: Tensor, t: Tensor, r: Tensor) -> Tensor:
        return _inverse_alpha(alpha)


@WEIGHTINGS.register("adaptive")
class Adaptive:
    """w = sg(1 / (||Delta||^2 + c)^p), MeanFlow's adaptive loss weighting (Geng et al. 2025, Sec. 4.3).

    reduction says what ||Delta||^2 is, so that c and p mean what the code that set them meant:
    - "mean" (default): the per-element mean, as the alpha-Flow code (and DESIGN.md) reduce, c per element;
    - "sum": the per-sample sum over D elements, as MeanFlow's official code reduces (JAX: c = 0.01,
      p = 1.0 on ImageNet, reference/recipes.yaml; py-meanflow on CIFAR: c = 1e-3, p = 0.75). The weight is
      then w = D / (D ||Delta||^2_mean + c)^p, so that w times flowzoo's per-element-mean error equals the
      official per-sample-sum loss sum / (sum + c)^p exactly (the D in the numerator restores the sum).
    """

    elements_aware = True  # the objective passes D, the number of elements per sample

    def __init__(self, c: float = 1e-3, p: float = 1.0, reduction: str = "mean"):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"adaptive weighting reduction must be 'mean' or 'sum', not {reduction!r}")
        self.c, self.p, self.reduction = float(c), float(p), reduction

    def __call__(self, alpha: Tensor, sq_err: Tensor, t: Tensor, r: Tensor, elements: int = 1) -> Tensor:
        if self.reduction == "sum":
            return elements / (elements * sq_err.detach() + self.c).pow(self.p)
        return 1.0 / (sq_err.detach() + self.c).pow(self.p)


@WEIGHTINGS.register("alpha_adaptive")
class AlphaAdaptive(Adaptive):
    """The official alpha-Flow code: w = sg(alpha / (||Delta||^2 + c)^p) for alpha > 0, MeanFlow's adaptive
    weight at alpha = 0 (and so also for alpha = 1, flow-matching samples: 1/(||Delta||^2 + c)^p)."""

    def __call__(self, alpha: Tensor, sq_err: Tensor, t: Tensor, r: Tensor, elements: int = 1) -> Tensor:
        scale = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
        return scale * super().__call__(alpha, sq_err, t, r, elements)


@WEIGHTINGS.register("inverse_alpha_adaptive")
class InverseAlphaAdaptive(Adaptive):
    """w = sg(alpha / (||Delta||^2 + alpha^2 c)^p) for p = 1; in general (1/alpha) sg(1/(||Delta/alpha||^2 + c)^p).

    MeanFlow's adaptive weight applied to the rescaled residual Delta / alpha, times the paper's 1/alpha.
    Near alpha = 0, Delta = alpha (u - u_MF) + O(alpha^2), so the gradient tends to MeanFlow's
    adaptive-weighted gradient: the curriculum passes into MeanFlow without a jump in gradient scale.
    (The official alpha/(||Delta||^2 + c) instead vanishes like alpha^2 and then jumps at the alpha = 0
    clamp.) At alpha = 1 both equal MeanFlow's 1/(||Delta||^2 + c)^p.

    consistency_scale multiplies the weight of the r < t rows (1 by default). SoFlow's code (the soflow
    preset) sets 0.5: its consistency loss mean(sg(w) u * sg(dq)), dq = -Delta / alpha, has the gradient
    w Delta / (alpha D), half that of the squared form w ||Delta||^2 / alpha (zlab-princeton/SoFlow
    models.py, Soflow.get_consistency_loss).
    """

    def __init__(self, c: float = 1e-3, p: float = 1.0, reduction: str = "mean", consistency_scale: float = 1.0):
        super().__init__(c, p, reduction)
        self.consistency_scale = float(consistency_scale)

    def __call__(self, alpha: Tensor, sq_err: Tensor, t: Tensor, r: Tensor, elements: int = 1) -> Tensor:
        inv = _inverse_alpha(alpha)
        scaled = sq_err.detach() * inv.pow(2)  # ||Delta / alpha||^2; at alpha = 0 Delta is already the MeanFlow residual
        weight = inv * super().__call__(alpha, scaled, t, r, elements)
        if self.consistency_scale != 1.0:
            weight = torch.where(r < t, self.consistency_scale * weight, weight)
        return weight


@WEIGHTINGS.register("consistency")
class ConsistencyWeight:
    """w = t / alpha: consistency training's ||f(z_t) - f-(z_s)||^2 / (t - s) in the average-velocity form.

    With r = 0, f(z, t) = z - t u(z, 0, t) and t - s = alpha t, so ||f - f_tgt||^2 = t^2 ||Delta||^2 and
    dividing by the step t - s gives (t / alpha) ||Delta||^2 (generic discrete CT with squared L2 in flowzoo's
    t; ECT's own unsquared L2 over sigma_t - sigma_r is the ``ect`` weighting, weighting_ect.py).
    """

    def __call__(self, alpha: Tensor, sq_err: Tensor, t: Tensor, r: Tensor) -> Tensor:
        return t * _inverse_alpha(alpha)


@WEIGHTINGS.register("tim")
class TransitionWeight:
    """TiM's loss weight (Wang et al. 2025, "Transition Models", arXiv 2509.04394; WZDTHU/TiM
    tim/schedulers/transition.py, time_weighting and adaptive_weighting at b431859): a time weight times an
    adaptive weight of the per-sample error,

        w = sg(1 / (err + c)) * g(t, r),   g = 1 / sqrt(tan t - tan r + sigma_d)   for r < t,  g = 1 at r = t,

    the ImageNet-256 setting of its code (weight_time_type "sqrt" on tangent-warped times, sigma_d = 1,
    c = 10e-6 = 1e-5, no power). err is what the objective hands every weighting: ||Delta||^2 (a
    per-element mean, as TiM's mean_flat) plus, with directional_loss > 0, the directional term; TiM's
    trainer (use_dir_loss=True) adds that term before adaptive_weighting, so its denominator holds it
    too. ``time`` = "reciprocal" drops the sqrt, "constant" the time weight.
    """

    def __init__(self, sigma_d: float = 1.0, c: float = 1e-5, time: str = "sqrt", tangent: bool = True):
        if time not in ("sqrt", "reciprocal", "constant"):
            raise ValueError(f"tim weighting time must be 'sqrt', 'reciprocal' or 'constant', not {time!r}")
        self.sigma_d, self.c, self.time, self.tangent = float(sigma_d), float(c), time, bool(tangent)

    def __call__(self, alpha: Tensor, sq_err: Tensor, t: Tensor, r: Tensor) -> Tensor:
        tt, rr = (torch.tan(t), torch.tan(r)) if self.tangent else (t, r)
        gap = (tt - rr) + self.sigma_d
        g = {"sqrt": gap.rsqrt(), "reciprocal": 1.0 / gap, "constant": torch.ones_like(gap)}[self.time]
        g = torch.where(r < t, g, torch.ones_like(g))
        return g / (sq_err.detach() + self.c)


@WEIGHTINGS.register("tangent_normalised")
class TangentNormalised:
    """sCM's tangent normalisation (Lu & Song 2024, "Simplifying, Stabilizing and Scaling Continuous-Time
    Consistency Models", Sec. 4.2: g -> g / (||g|| + c), c = 0.1) as a detached weight:

        w = D / (||Delta||_2 + c),   ||Delta||_2 = sqrt(D ||Delta||^2_mean)   (the L2 norm over all D elements)

    so that w ||Delta||^2_mean = ||Delta||_2^2 / (||Delta||_2 + c) and the gradient with respect to the
    prediction is 2 Delta / (||Delta||_2 + c): the normalised tangent direction, whatever its scale.

    This normalises the linear-path residual Delta itself, not sCM's TrigFlow-space tangent g (which is
    Delta times a per-time factor): the scm preset's records before issue 25 used it. The official
    normalisation is ``trigflow_tangent_normalised``.
    """

    elements_aware = True

    def __init__(self, c: float = 0.1):
        self.c = float(c)

    def __call__(self, alpha: Tensor, sq_err: Tensor, t: Tensor, r: Tensor, elements: int = 1) -> Tensor:
        norm = (elements * sq_err.detach()).clamp(min=0).sqrt()
        return elements / (norm + self.c)


@WEIGHTINGS.register("trigflow_tangent_normalised")
class TrigFlowTangentNormalised:
    """sCM's tangent normalisation on the tangent sCM normalises, TrigFlow's g, for r = 0 (the scm preset):
    the per-sample weight whose gradient equals that of NVlabs/rcm's sCM loss (rcm/models/
    t2v_model_distill_rcm.py, T2VDistillModel_rCM._student_scm_step, commit 5b41aa9; sigma_d = 1).

    The official loss per sample is  S ||F - sg(F) - g / (||g||_2 + c)||^2, summed over the D elements,
    S = loss_scale (100), with TrigFlow time tau, x_tau = cos(tau) x + sin(tau) e. On the linear path
    (t = sin tau / k, k = cos tau + sin tau, z_t = x_tau / k, network output u = u(z_t, 0, t)):
      - F = (cos tau x_tau - f) / sin tau with f = z_t - t u, i.e. F = (cos tau - sin tau) z_t + u / k, so dF/du = 1/k;
      - g = cos(tau) df/dtau (the code's g at tangent warm-up ratio 1), and along the data path
        df/dt = v - u - t du/dt = -Delta, dt/dtau = 1/k^2, so g = -(cos tau / k^2) Delta.
    The gradient with respect to u is then 2 S (cos tau / k^3) Delta / ((cos tau / k^2) ||Delta||_2 + c);
    flowzoo's w ||Delta||^2_mean has gradient 2 w Delta / D, so

        w = S D (cos tau / k^3) / ((cos tau / k^2) ||Delta||_2 + c)
          = S D (1 - t) rho^2 / ((1 - t) rho ||Delta||_2 + c),    rho = sqrt(t^2 + (1 - t)^2) = 1 / k,

    using cos tau = (1 - t) rho. The weight vanishes as t -> 1 (cos tau -> 0), where g does; c = 0.1 acts on
    ||g||_2, i.e. on ||Delta||_2 scaled by (1 - t) rho. ``scale`` is S (rcm's loss_scale, 100 in its code and
    experiments); r is not used (sCM has r = 0 everywhere).
    """

    elements_aware = True

    def __init__(self, c: float = 0.1, scale: float = 100.0):
        self.c, self.scale = float(c), float(scale)

    def __call__(self, alpha: Tensor, sq_err: Tensor, t: Tensor, r: Tensor, elements: int = 1) -> Tensor:
        delta_norm = (elements * sq_err.detach()).clamp(min=0).sqrt()  # ||Delta||_2 over all D elements
        rho = torch.sqrt(t.square() + (1 - t).square())  # 1 / (cos tau + sin tau)
        g_per_delta = (1 - t) * rho  # ||g||_2 / ||Delta||_2 = cos tau / k^2
        return self.scale * elements * g_per_delta * rho / (g_per_delta * delta_norm + self.c)
