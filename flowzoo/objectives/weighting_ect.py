"""ECT's loss as a detached weight on flowzoo's per-element-mean squared error.

ECT (Geng et al. 2024, "Consistency Models Made Easy"; locuslab/ect @ 4311059, training/loss.py,
``ECMLoss.__call__``) trains on the per-sample loss

    L = (sqrt(||D_t - D_r||_2^2 + c^2) - c) / (sigma_t - sigma_r)      (c = 0: the plain L2 norm, unsquared)

with the norm summed over all N elements and EDM's noise levels sigma. In flowzoo's x0 form (r = 0,
f(z_t, t) = z_t - t u(z_t, 0, t), the partner at s = alpha r + (1 - alpha) t) the two data estimates differ
by f_t - f_s = -(t - r) Delta, so ||D_t - D_r||^2 = A m with A = (t - r)^2 N and m = ||Delta||^2_mean, and
sigma = t / (1 - t) gives sigma_t - sigma_s = (t - s) / ((1 - t)(1 - s)), t - s = alpha (t - r). Hence

    L = (sqrt(A m + c^2) - c) G,       G = (1 - t)(1 - s) / (alpha (t - r)),
    dL/dm = A G / (2 sqrt(A m + c^2))  =: w,

and the detached w times m has exactly L's gradient with respect to the prediction. (The logged loss
w m is not L's value: for c = 0 it is L / 2.) The formula assumes r = 0, as ECT's data estimate does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowzoo.registry import WEIGHTINGS


@WEIGHTINGS.register("ect")
class ECTWeight:
    """ECT's unsquared L2 over sigma_t - sigma_r: w = N (t - r)(1 - t)(1 - s) / (2 alpha sqrt(A m + c^2)).

    A = (t - r)^2 N and m = ||Delta||^2_mean, as in the module docstring; the weight is detached.

    c is ECT's pseudo-Huber constant (its ``-c`` option, default 0.0) on the per-sample sum, in data units.
    Where the norm (and c) is zero the gradient of the unsquared norm has no direction: the weight is 0
    there, as it is where t - s = alpha (t - r) = 0 (no step, nothing to divide by).
    """

    elements_aware = True  # the objective passes N, the number of elements per sample

    def __init__(self, c: float = 0.0):
        if c < 0:
            raise ValueError(f"ect weighting c must be >= 0, not {c}")
        self.c = float(c)

    def __call__(self, alpha: Tensor, sq_err: Tensor, t: Tensor, r: Tensor, elements: int = 1) -> Tensor:
        span = t - r
        pseudo_norm = (span.pow(2) * elements * sq_err.detach() + self.c ** 2).clamp(min=0).sqrt()
        # t - s and 1 - s from alpha, without the cancellations of t - s and 1 - s near t = 1.
        step = alpha * span
        one_minus_s = (1 - t) + step
        usable = (pseudo_norm > 0) & (step > 0)
        ones = torch.ones_like(step)
        inverse_sigma_gap = (1 - t) * one_minus_s / step.where(usable, ones)  # 1 / (sigma_t - sigma_s)
        weight = span.pow(2) * elements * inverse_sigma_gap / (2 * pseudo_norm.where(usable, ones))
        return weight.where(usable, torch.zeros_like(weight))
