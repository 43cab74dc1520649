"""Jacobian-vector products for the MeanFlow (alpha = 0) target.

The total derivative along the path is d/dt u(z_t, r, t) = (du/dz) v~ + du/dt, i.e. a JVP of
u(z, r, t) with tangents (v~, 0, 1) on (z, r, t) (MeanFlow, Geng et al. 2025, Eq. 8). Each backend
returns (u(z, r, t), d/dt u) and never builds a graph to the parameters: the target is stop-gradient.

Fused SDPA kernels (flash / memory-efficient) have no forward-mode rule and no double backward, so
the analytic backends run attention on the math kernel, inside this scope only; the training forward
keeps the fused kernels.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from flowzoo.registry import JVP_BACKENDS
from flowzoo.objectives.velocity import VelocityFn


# torch's forward-mode AD loads its JVP decompositions through the deprecated torch.jit.script on first
# use; the warning is about torch internals, not about anything a flowzoo user can change.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)


def _math_attention() -> contextlib.AbstractContextManager:
    return sdpa_kernel(SDPBackend.MATH)


def _ones(t: Tensor) -> Tensor:
    return torch.ones_like(t)


@JVP_BACKENDS.register("forward")
def forward_mode_jvp(u: VelocityFn, z: Tensor, r: Tensor, t: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Forward-mode AD (torch.func.jvp): one pass, about the cost of 1.5-2 forwards."""
    with torch.no_grad(), _math_attention():
        out, du_dt = torch.func.jvp(lambda z_, t_: u(z_, r, t_), (z, t), (v, _ones(t)))
    return out, du_dt


@JVP_BACKENDS.register("double_backward")
def double_backward_jvp(u: VelocityFn, z: Tensor, r: Tensor, t: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """The double-vjp trick of torch.autograd.functional.jvp (the official alpha-Flow code's backend)."""
    with torch.enable_grad(), _math_attention():
        out, du_dt = torch.autograd.functional.jvp(
            lambda z_, t_: u(z_, r, t_), (z.detach(), t.detach()), (v.detach(), _ones(t)), create_graph=False
        )
    return out.detach(), du_dt.detach()


@JVP_BACKENDS.register("finite_difference")
def finite_difference_jvp(
    u: VelocityFn, z: Tensor, r: Tensor, t: Tensor, v: Tensor, eps: float | None = None
) -> tuple[Tensor, Tensor]:
    """Central difference (u(z + eps v, r, t + eps) - u(z - eps v, r, t - eps)) / (2 eps), error O(eps^2).

    Needs no autograd support from the network at all; costs three forwards. The default step
    balances truncation O(eps^2) against round-off O(machine eps / eps) for the dtype.
    """
    if eps is None:
        eps = 1e-6 if z.dtype == torch.float64 else 1e-3
    with torch.no_grad():
        plus = u(z + eps * v, r, t + eps)
        minus = u(z - eps * v, r, t - eps)
        out = u(z, r, t)
    return out, (plus - minus) / (2 * eps)


def get_jvp_backend(name: str):
    return JVP_BACKENDS.get(name)
