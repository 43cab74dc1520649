"""Output parameterisations: what the backbone's raw output means, converted to the average velocity u.

The objectives, samplers and metrics all read u(z, t, h, y) (DESIGN.md §1). A backbone may instead
predict the clean data point, as pixel MeanFlow does (pMF, Lu et al. 2026, arXiv 2601.22158: the
network outputs x^(z_t, r, t) and u = (z_t - x^) / t, so the MeanFlow loss stays in velocity space).
``backbone.prediction: x`` wraps any registered backbone that way; ``u`` (the default) leaves it alone.
``backbone.prediction_t_min`` is the floor on the t that divides (below).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

PREDICTIONS = ("u", "x")
# The floor on t in u = (z - x^) / max(t, t_min) when a config does not name one. pMF's own code uses
# 0.05 (Lyy-iiis/pMF models/pmfDiT.py, pmfDiT.__call__ at 75f6073: clip(t, 0.05, 1)) and its preset sets
# that (configs/objective/pmf.yaml). The fallback stays 1e-3 because a run directory is data: a saved
# config without the key must rebuild the network it was trained as, and the floor is part of the
# function (below it u is (z - x^) / t_min), so changing it would silently change every earlier x-run's
# samples; no other method's official value is known to flowzoo to say 0.05 is right for all.
DEFAULT_T_MIN = 1e-3


class XPrediction(nn.Module):
    """u = (z - net(z, t, h, y)) / max(t, t_min): a clean-data prediction read as an average velocity.

    t_min keeps the division finite at t -> 0, where z_t is the data and any x^ near z gives a small u.
    Below t_min the divisor is constant, so d/dt of the divisor is 0 there (the JVP sees only x^'s own t
    dependence), as with pMF's clip.
    """

    def __init__(self, net: nn.Module, t_min: float = DEFAULT_T_MIN):
        super().__init__()
        if not float(t_min) > 0:
            raise ValueError(f"backbone.prediction_t_min must be a positive number, not {t_min!r}")
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


def apply_prediction(net: nn.Module, prediction: str, t_min: float = DEFAULT_T_MIN) -> nn.Module:
    if prediction not in PREDICTIONS:
        raise ValueError(f"backbone.prediction must be one of {', '.join(PREDICTIONS)}, not {prediction!r}")
    return XPrediction(net, t_min) if prediction == "x" else net
