"""Jacobian-vector products for the MeanFlow (alpha = 0) target.

The total derivative along the path is d/dt u(z_t, r, t) = (du/dz) v~ + du/dt, i.e. a JVP of
u(z, r, t) with tangents (v~, 0, 1) on (z, r, t) (MeanFlow, Geng et al. 2025, Eq. 8). Each backend
returns (u(z, r, t), d/dt u) and never builds a graph to the parameters: the target is stop-gradient.

Fused SDPA kernels (flash / memory-efficient) have no forward-mode rule and no double backward, so
the analytic backends (forward, functorch, double_backward) run attention, inside their scope only, on
the kernel their ``attention`` argument names (flowzoo.backbones.attention); the training forward keeps
the fused kernels. ``attention: math`` (the default) is SDPA on the math kernel, on any device.
``attention: jvp_flash`` is the fused Triton kernel of jvp-flash-attention (CUDA, ``pip install
'flowzoo[gpu]'``), whose forward-mode rule serves the ``forward`` and ``functorch`` backends; its
backward has no derivative of its own, so ``double_backward`` refuses it. Select it in a config with

    objective:
      jvp: {name: forward, attention: jvp_flash}
"""

from __future__ import annotations

import functools
import inspect
import warnings

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from flowzoo.backbones.attention import check_kernel, jvp_attention
from flowzoo.registry import JVP_BACKENDS
from flowzoo.objectives.velocity import VelocityFn


# torch's forward-mode AD loads its JVP decompositions through the deprecated torch.jit.script on first
# use; the warning is about torch internals, not about anything a flowzoo user can change.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)


def _ones(t: Tensor) -> Tensor:
    return torch.ones_like(t)


@JVP_BACKENDS.register("forward")
def forward_mode_jvp(
    u: VelocityFn, z: Tensor, r: Tensor, t: Tensor, v: Tensor, attention: str = "math"
) -> tuple[Tensor, Tensor]:
    """Forward-mode AD on dual tensors (torch.autograd.forward_ad): one pass carrying (u, du/dt).

    Same rules and numbers as torch.func.jvp (the ``functorch`` backend) without functorch's per-op
    tensor wrapping: on a CPU DiT-tiny/2 (8 samples, 1 thread) the JVP alone ran ~14% faster, and in a
    MeanFlow training step the peak tensor memory fell from 229 to 87 MB (flowzoo bench perf; the
    step's time was within noise). Dual levels do not nest: inside another forward-mode transform use
    ``functorch``. ``attention``: the attention kernel inside the JVP, "math" or "jvp_flash" (module doc).
    """
    with torch.no_grad(), jvp_attention(attention, backend="forward"), fwAD.dual_level():
        out = u(fwAD.make_dual(z, v), r, fwAD.make_dual(t, _ones(t)))
        primal, du_dt = fwAD.unpack_dual(out)
    if du_dt is None:  # u does not depend on (z, t) at all
        du_dt = torch.zeros_like(primal)
    return primal, du_dt


@JVP_BACKENDS.register("functorch")
def functorch_jvp(
    u: VelocityFn, z: Tensor, r: Tensor, t: Tensor, v: Tensor, attention: str = "math"
) -> tuple[Tensor, Tensor]:
    """Forward-mode AD through torch.func.jvp: composes with other torch.func transforms.

    ``attention``: the attention kernel inside the JVP, "math" or "jvp_flash" (module doc)."""
    with torch.no_grad(), jvp_attention(attention, backend="functorch"):
        out, du_dt = torch.func.jvp(lambda z_, t_: u(z_, r, t_), (z, t), (v, _ones(t)))
    return out, du_dt


@JVP_BACKENDS.register("double_backward")
def double_backward_jvp(
    u: VelocityFn, z: Tensor, r: Tensor, t: Tensor, v: Tensor, attention: str = "math"
) -> tuple[Tensor, Tensor]:
    """The double-vjp trick of torch.autograd.functional.jvp (the official alpha-Flow code's backend).

    It differentiates attention's backward, so ``attention`` must name a kernel whose backward is
    differentiable: "math" is; "jvp_flash" is not (its backward is a Triton kernel) and is refused."""
    with torch.enable_grad(), jvp_attention(attention, backend="double_backward", double_backward=True):
        out, du_dt = torch.autograd.functional.jvp(
            lambda z_, t_: u(z_, r, t_), (z.detach(), t.detach()), (v.detach(), _ones(t)), create_graph=False
        )
    return out.detach(), du_dt.detach()


double_backward_jvp.differentiates_backward = True  # get_jvp_backend checks its attention kernel for it


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


def get_jvp_backend(spec):
    """A backend from its name, or from {name: ..., **arguments} (e.g. the finite difference's eps)."""
    if isinstance(spec, dict):
        args = {k: v for k, v in spec.items() if k != "name"}
        if "name" not in spec:
            raise ValueError("a jvp spec mapping needs a name, e.g. {name: finite_difference, eps: 0.005}")
        backend = JVP_BACKENDS.get(spec["name"])
        accepted = inspect.signature(backend).parameters
        unknown = sorted(set(args) - set(accepted) - {"u", "z", "r", "t", "v"})
        if unknown or set(args) & {"u", "z", "r", "t", "v"}:
            raise ValueError(f"jvp backend '{spec['name']}' takes no option(s) {', '.join(unknown or sorted(args))}")
        if "attention" in args:  # refuse a kernel that cannot run here now, not at the first alpha = 0 step
            check_kernel(args["attention"], backend=spec["name"],
                         double_backward=getattr(backend, "differentiates_backward", False))
        return functools.partial(backend, **args)
    return JVP_BACKENDS.get(spec)
