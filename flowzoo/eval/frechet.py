"""Frechet distance between Gaussians fitted to two feature sets (the math behind FID).

    FD = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1^{1/2} S_2 S_1^{1/2})^{1/2})

The cross term uses tr((S_1 S_2)^{1/2}) = tr((A S_2 A)^{1/2}) with A = S_1^{1/2}: A S_2 A is symmetric
PSD, so both square roots are eigendecompositions of symmetric matrices in float64, with round-off
negative eigenvalues clipped to 0. No complex parts, and singular covariances (fewer samples than
dimensions, dead features) are fine.

FD estimated from n samples is biased upward by roughly O(d / n); compare numbers only at equal n.
"""

from __future__ import annotations

import numpy as np
import torch


def gaussian_stats(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) in float64 of an (N, D) feature array; covariance with the 1/(N-1) convention."""
    f = np.asarray(torch.as_tensor(features).detach().cpu().double())
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need an (N >= 2, D) feature array, got shape {f.shape}.")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)  # symmetrise against round-off before eigh
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, cov1) and N(mu2, cov2), in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    a = _sqrt_psd(cov1)
    m = a @ cov2 @ a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    fd = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * cross)
    return max(fd, 0.0)  # tiny negative values are round-off of an exact 0
