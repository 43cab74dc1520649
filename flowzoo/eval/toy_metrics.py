"""Metrics for the 2-D toys: sliced Wasserstein, MMD, support fraction, mode coverage.

All compare generated samples with fresh data drawn by `dataset.reference(n, seed)` (never the training
stream). The noise floor (`reference()`, keys "real/...") is the same computation for fresh data
against other fresh data at the same n; a model is as good as these metrics can tell once it is there.
"""

from __future__ import annotations

import warnings

import torch

from flowzoo.data.stream import generator
from flowzoo.eval.base import Metric
from flowzoo.registry import METRICS

MMD_BANDWIDTHS = (0.1, 0.2, 0.5, 1.0, 2.0)  # fixed, spanning the toys' scales (data has unit std)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, num_projections: int = 128, seed: int = 0) -> float:
    """SW_2(a, b) = sqrt(mean_theta W_2^2(a . theta, b . theta)) over seeded random unit directions theta.

    In 1-D, W_2^2 between equal-size empirical sets is the mean squared difference of sorted values.
    """
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs equal-size sets, got {tuple(a.shape)} and {tuple(b.shape)}.")
    a, b = a.flatten(1).double(), b.flatten(1).double()
    theta = torch.randn(a.shape[1], num_projections, generator=generator(seed), dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa, pb = (a @ theta).sort(dim=0).values, (b @ theta).sort(dim=0).values
    return ((pa - pb) ** 2).mean().sqrt().item()


def mmd_rbf(a: torch.Tensor, b: torch.Tensor, bandwidths: tuple[float, ...] = MMD_BANDWIDTHS) -> float:
    """MMD = sqrt(max(0, mean k(a, a') + mean k(b, b') - 2 mean k(a, b))), the biased (V-statistic) estimate.

    k(x, y) = mean over sigma in `bandwidths` of exp(-|x - y|^2 / (2 sigma^2)): fixed bandwidths, not the
    median heuristic, so the numbers of different models are comparable. The biased estimate is >= 0 and
    sits at O(1/sqrt(n)) for identical distributions; that is what the noise floor measures.
    """
    a, b = a.flatten(1).double(), b.flatten(1).double()

    def kernel_mean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(x, y).pow(2)
        return torch.stack([torch.exp(-d2 / (2 * s * s)).mean() for s in bandwidths]).mean()

    mmd2 = kernel_mean(a, a) + kernel_mean(b, b) - 2 * kernel_mean(a, b)
    return mmd2.clamp_min(0).sqrt().item()


def mode_coverage(mode_index: torch.Tensor, distance: torch.Tensor, num_modes: int, mode_std: float,
                  within_stds: float = 2.0, min_mass: float = 0.5) -> int:
    """Number of modes holding at least `min_mass` of their expected mass n / num_modes within
    `within_stds` std of their centre (`mode_index`, `distance`: each sample's nearest mode and its distance).

    A mode counts only when enough of its mass is near it: a true isotropic 2-D Gaussian mode puts
    1 - exp(-k^2 / 2) of its samples within k std (86.5% at k = 2), so real data covers every mode with
    room to spare, while samples smeared into a ring between the modes, which reach into every mode's
    3-std support with a few percent each (the old "at least 1% of samples" rule said 8 of 8), count for none.
    """
    near = distance < within_stds * mode_std
    counts = torch.bincount(mode_index[near], minlength=num_modes)
    return int((counts >= min_mass * len(mode_index) / num_modes).sum())


@METRICS.register("toy2d")
class ToyMetrics(Metric):
    """swd, mmd (vs fresh data), support_frac (toys with a support), mode_coverage (8 gaussians).

    Keys: "swd" sliced 2-Wasserstein (`num_projections` seeded directions); "mmd" multi-bandwidth RBF MMD;
    "support_frac" fraction of samples inside the support (checkerboard cells; 8 gaussians: within 3 std of
    a centre, 0.989 for real data); "mode_coverage" modes (of 8) holding at least `min_mass` (50%) of their
    expected n/8 samples within `within_stds` (2) std of their centre (see `mode_coverage`).
    SWD and MMD use `num_samples` samples (a seeded subset if more are given); their floors are measured at
    that n, so generate `num_samples` samples. Support and coverage use all samples.
    """

    name = "toy2d"

    def __init__(self, seed: int = 0, num_samples: int = 2000, num_projections: int = 128,
                 bandwidths: tuple[float, ...] = MMD_BANDWIDTHS, within_stds: float = 2.0, min_mass: float = 0.5):
        super().__init__(seed)
        self.num_samples, self.num_projections = num_samples, num_projections
        self.bandwidths, self.within_stds, self.min_mass = tuple(bandwidths), within_stds, min_mass

    def supports(self, dataset) -> bool:
        return tuple(dataset.sample_shape) == (2,) and hasattr(dataset, "sample")

    def info(self, dataset) -> dict:
        """The protocol of these numbers, for result records (no learned extractor: its settings pin it)."""
        return {
            "implementation": "flowzoo.eval.toy_metrics (2: mode_coverage by mass near each mode)",
            "num_samples": self.num_samples, "num_projections": self.num_projections, "bandwidths": list(self.bandwidths),
            "mode_within_stds": self.within_stds, "mode_min_mass": self.min_mass,
            "reference": f"fresh samples of {dataset.name}, seeded by the run seed",
        }

    def _measure(self, x: torch.Tensor, dataset, real_seed: int) -> dict[str, float]:
        out = {}
        subset = x
        if len(x) > self.num_samples:
            subset = x[torch.randperm(len(x), generator=generator(self.seed))[:self.num_samples]]
        elif len(x) < self.num_samples:
            warnings.warn(f"toy2d: {len(x)} samples given, the noise floor is measured at {self.num_samples}; "
                          "swd/mmd are not comparable to it.", stacklevel=3)
        real = dataset.reference(len(subset), real_seed)[0]
        out["swd"] = sliced_wasserstein(subset, real, self.num_projections, self.seed)
        out["mmd"] = mmd_rbf(subset, real, self.bandwidths)
        if dataset.in_support is not None:
            inside = dataset.in_support(x)
            out["support_frac"] = inside.float().mean().item()
            if hasattr(dataset, "nearest_mode"):
                modes, distance = dataset.nearest_mode(x)
                out["mode_coverage"] = float(mode_coverage(modes, distance, len(dataset.mode_centers), dataset.mode_std,
                                                           self.within_stds, self.min_mass))
        return out

    def __call__(self, generated: torch.Tensor, labels: torch.Tensor | None, dataset) -> dict[str, float]:
        return self._measure(self._check_shape(generated, dataset), dataset, real_seed=self.seed)

    def reference(self, dataset) -> dict[str, float]:
        """"real/<key>": fresh data (seed + 1) measured exactly as generated samples are (against seed)."""
        fresh = dataset.reference(self.num_samples, self.seed + 1)[0]
        return {f"real/{k}": v for k, v in self._measure(fresh, dataset, real_seed=self.seed).items()}
