"""Output parameterisations: what the backbone's raw output means, converted to the average velocity u.

The objectives, samplers and metrics all read u(z, t, h, y) (DESIGN.md §1). A backbone may instead
predict the clean data point, as pixel MeanFlow does (pMF, Lu et al. 2026, arXiv 2601.22158: the
network outputs x^(z_t, r, t) and u = (z_t - x^) / t, so the MeanFlow loss stays in velocity space).
``backbone.prediction: x`` wraps any registered backbone that way; ``u`` (the default) leaves it alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

PREDICTIONS = ("u", "x")


class XPrediction(nn.Module):
    """u = (z - net(z, t, h, y)) / max(t, t_min): a clean-data prediction read as an average velocity.

    t_min keeps the division finite at t -> 0, where z_t is the data and any x^ near z gives a small u;
    pMF's time sampler never draws t = 0 exactly.
    """

    def __init__(self, net: nn.Module, t_min: float = 1e-3):
        super().__init__()
        self.inner = net
        self.t_min = float(t_min)
        self.num_classes = getattr(net, "num_classes", 0)
        self.sample_shape = getattr(net, "sample_shape", None)

    def forward(self, z: Tensor, t, h, y=None) -> Tensor:
        x_hat = self.inner(z, t, h, y)
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
        if t.dim() == 0:
            t = t.expand(z.shape[0])
        t = t.clamp(min=self.t_min).reshape(-1, *([1] * (z.dim() - 1)))
        return (z - x_hat) / t


def apply_prediction(net: nn.Module, prediction: str) -> nn.Module:
    if prediction not in PREDICTIONS:
        raise ValueError(f"backbone.prediction must be one of {', '.join(PREDICTIONS)}, not {prediction!r}")
    return XPrediction(net) if prediction == "x" else net
