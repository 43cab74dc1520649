"""Attention for flowzoo's DiTs: fused SDPA in training, a chosen kernel inside the JVP scope only.

    out = attention(q, k, v)            # q, k, v: (batch, heads, tokens, head_dim)
    with jvp_attention("jvp_flash"):    # what a JVP backend does around its forward-mode pass
        ...                             # every ``attention`` call in here runs the Triton kernel

Outside a JVP scope ``attention`` is F.scaled_dot_product_attention with whatever fused kernel PyTorch
picks (flash / memory-efficient on a GPU), in training and at sampling alike. The fused kernels have no
forward-mode rule, so a JVP scope selects one of these kernels:

- ``"math"`` (the default, and the CPU path): SDPA on SDPBackend.MATH, the behaviour before kernels
  were selectable; the JVP scope is exactly ``sdpa_kernel(SDPBackend.MATH)``.
- ``"jvp_flash"``: the Triton flash-attention kernel of the ``jvp-flash-attention`` package
  (``pip install 'flowzoo[gpu]'``), whose autograd.Function carries a forward-mode rule, so the
  tangent is computed in the same fused pass. CUDA; float16 / bfloat16 / float32; head dims 32, 64,
  128, 256; an even number of at least 32 tokens. Its backward is a Triton kernel with no derivative
  of its own, so it serves forward mode only (not the double-vjp trick). Under Triton's interpreter
  (``TRITON_INTERPRET=1`` in the environment before triton is first imported, i.e. before Python
  starts: torch imports triton) the same kernel code runs on CPU tensors too, slowly, in float16 /
  float32 only: that is how the tests run the real kernel without a GPU.

Any other SDPA call inside a JVP scope (a network that does not go through ``attention``) still runs
on the math kernel. Whether a kernel can run is checked twice, each time with one sentence that says
what to do: ``check_kernel`` without tensors (the name, CUDA, the package: objectives call it when
they are built), and, for a kernel with constraints on its inputs, at each call on the tensors (device,
dtype, head dim, tokens). A plugin or a test adds a kernel with ``register_kernel``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Callable

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from flowzoo.config import ConfigError

__all__ = [
    "AttentionKernelError", "KERNELS", "AttentionKernel", "attention", "check_kernel", "jvp_attention",
    "jvp_flash_interpreted", "jvp_flash_problem", "register_kernel",
]

GPU_EXTRA = "pip install 'flowzoo[gpu]'"


class AttentionKernelError(ConfigError):
    """An attention kernel that cannot run here; the message is one sentence saying what to do."""


@dataclass(frozen=True)
class AttentionKernel:
    """A kernel for the JVP scope.

    fn: (q, k, v) -> out on (batch, heads, tokens, head_dim), scale head_dim ** -0.5, carrying the
        forward-mode tangent when its inputs are dual tensors.
    unavailable: () -> None, or the sentence saying why the kernel cannot run on this machine.
    unsupported: (q, k, v) -> None, or the sentence saying why it cannot run on these tensors.
    double_backward: whether its backward is itself differentiable (the double-vjp backend needs it).
    """

    fn: Callable[[Tensor, Tensor, Tensor], Tensor]
    unavailable: Callable[[], str | None] = lambda: None
    unsupported: Callable[[Tensor, Tensor, Tensor], str | None] | None = None
    double_backward: bool = True


KERNELS: dict[str, AttentionKernel] = {}


def register_kernel(name: str, kernel: AttentionKernel) -> None:
    if name in KERNELS:
        raise ValueError(f"attention kernel '{name}' is already registered; pick another name.")
    KERNELS[name] = kernel


# The kernel of the innermost non-math JVP scope, or None: the training forward, or a math scope (whose
# SDPA calls the surrounding sdpa_kernel(MATH) already pins). A plain global, not a ContextVar, so that
# torch.compile traces the dispatch with a guard instead of a graph break.
_active: AttentionKernel | None = None


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Softmax(q k^T / sqrt(head_dim)) v for (batch, heads, tokens, head_dim) inputs.

    F.scaled_dot_product_attention outside a JVP scope; the scope's kernel inside one.
    """
    kernel = _active
    if kernel is None:
        return F.scaled_dot_product_attention(q, k, v)
    if kernel.unsupported is not None:
        problem = kernel.unsupported(q, k, v)
        if problem is not None:
            raise AttentionKernelError(problem)
    return kernel.fn(q, k, v)


def check_kernel(name: str, *, backend: str | None = None, double_backward: bool = False) -> AttentionKernel:
    """The kernel ``name`` if it can run on this machine; else AttentionKernelError in one sentence.

    ``double_backward``: the caller differentiates the kernel's backward (``backend`` names the caller
    in the message)."""
    if not isinstance(name, str) or name not in KERNELS:
        close = difflib.get_close_matches(str(name), KERNELS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise AttentionKernelError(f"unknown JVP attention kernel {name!r}{hint}; choose one of: {', '.join(sorted(KERNELS))}.")
    kernel = KERNELS[name]
    if double_backward and not kernel.double_backward:
        who = f"jvp backend '{backend}'" if backend else "a double-backward JVP"
        raise AttentionKernelError(
            f"{who} differentiates attention's backward, which attention kernel '{name}' cannot do (its backward "
            f"has no derivative of its own); use it with the forward or functorch backend, e.g. "
            f"objective.jvp: {{name: forward, attention: {name}}}.")
    problem = kernel.unavailable()
    if problem is not None:
        raise AttentionKernelError(problem)
    return kernel


class _KernelScope:
    """Sets the active kernel (restoring the previous one on exit) inside sdpa_kernel(MATH)."""

    def __init__(self, kernel: AttentionKernel):
        self.kernel = kernel
        self.math = sdpa_kernel(SDPBackend.MATH)
        self.previous: AttentionKernel | None = None

    def __enter__(self) -> None:
        global _active
        self.math.__enter__()
        self.previous, _active = _active, self.kernel

    def __exit__(self, *exc) -> None:
        global _active
        _active = self.previous
        self.math.__exit__(*exc)


def jvp_attention(name: str = "math", *, backend: str | None = None, double_backward: bool = False):
    """The context a JVP backend runs its network calls in: attention runs on kernel ``name``.

    "math" is sdpa_kernel(SDPBackend.MATH) itself (so the default path is what it always was). The
    kernel is checked first (``check_kernel``); its tensor constraints are checked at each call."""
    kernel = check_kernel(name, backend=backend, double_backward=double_backward)
    if kernel is KERNELS["math"] and _active is None:
        return sdpa_kernel(SDPBackend.MATH)
    return _KernelScope(None if kernel is KERNELS["math"] else kernel)


# ---- the built-in kernels ---------------------------------------------------------------------------

KERNELS["math"] = AttentionKernel(fn=F.scaled_dot_product_attention)  # run under sdpa_kernel(MATH)

# What jvp_flash_attention 0.14's JVPAttn.forward accepts (it asserts these; float64 has no Triton dot).
# It also accepts head dim 16, but its forward kernels then fail tl.static_assert(BLOCK_N <= HEAD_DIM): they
# launch with BLOCK_N = 32 (MIN_SEQUENCE_LENGTH) on every path, TMA or not (run under the interpreter).
JVP_FLASH_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
JVP_FLASH_HEAD_DIMS = (32, 64, 128, 256)
JVP_FLASH_MIN_TOKENS = 32
# Triton's interpreter runs kernels through numpy, which has no bfloat16: bf16 inputs give garbage, no error.
JVP_FLASH_INTERPRETER_DTYPES = (torch.float16, torch.float32)

_jvp_flash_module = None


def _load_jvp_flash():
    """The package's JVPAttn class, imported once; raises ImportError when the package or Triton is missing."""
    global _jvp_flash_module
    if _jvp_flash_module is None:
        _jvp_flash_module = importlib.import_module("jvp_flash_attention.jvp_attention")
    return _jvp_flash_module.JVPAttn


def _interpreter_requested() -> bool:
    """TRITON_INTERPRET is on in the environment (read as Triton's getenv_bool reads it)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on")


def jvp_flash_interpreted() -> bool:
    """Whether the loaded jvp_flash kernels run under Triton's interpreter (on CPU tensors too).

    ``@triton.jit`` reads TRITON_INTERPRET when it decorates, so both triton's own library (decorated when
    triton is first imported) and the package's kernels must have been decorated with it on; a kernel
    decorated without it is compiled for a GPU driver."""
    interpreter = sys.modules.get("triton.runtime.interpreter")  # imported by @triton.jit only when interpreting
    standard = sys.modules.get("triton.language.standard")
    if interpreter is None or standard is None or _jvp_flash_module is None:
        return False
    interpreted = interpreter.InterpretedFunction
    return isinstance(getattr(standard, "softmax", None), interpreted) and any(
        isinstance(value, interpreted) for value in vars(_jvp_flash_module).values())


def _jvp_flash_unavailable() -> str | None:
    cuda = torch.cuda.is_available()
    if not cuda and not _interpreter_requested():
        return ("attention kernel 'jvp_flash' is a Triton kernel that runs on CUDA GPUs only, and this machine has "
                "none (torch.cuda.is_available() is False); use attention: math, the default (tests run it on a CPU "
                "under Triton's interpreter, TRITON_INTERPRET=1 set before Python starts).")
    try:
        _load_jvp_flash()
    except ImportError as exc:
        return (f"attention kernel 'jvp_flash' needs the jvp-flash-attention package and Triton, which are not "
                f"installed ({exc}); install them with {GPU_EXTRA}.")
    if not cuda and not jvp_flash_interpreted():
        return ("attention kernel 'jvp_flash' finds TRITON_INTERPRET=1 but Triton was imported before it was set, so "
                "its kernels are compiled for a CUDA GPU this machine does not have; set TRITON_INTERPRET=1 in the "
                "environment before Python starts, or use attention: math.")
    return None


def jvp_flash_problem(device_type: str, dtype: torch.dtype, shapes: tuple[tuple[int, ...], ...], *,
                      interpreted: bool = False) -> str | None:
    """Why jvp_flash cannot run on q, k, v of this device type, dtype and shapes (None: it can).

    ``interpreted``: the kernels run under Triton's interpreter, which takes CPU tensors but no bfloat16."""
    where = "; use attention: math for this network."
    if device_type != "cuda" and not (interpreted and device_type == "cpu"):
        return f"attention kernel 'jvp_flash' needs CUDA tensors, but the network runs on {device_type}; move it to a GPU{where}"
    dtypes = JVP_FLASH_INTERPRETER_DTYPES if interpreted else JVP_FLASH_DTYPES
    if dtype not in dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        under = " under Triton's interpreter" if interpreted else ""
        return f"attention kernel 'jvp_flash'{under} supports {names}, not {str(dtype).removeprefix('torch.')}{where}"
    if len(set(shapes)) != 1 or len(shapes[0]) != 4:
        return f"attention kernel 'jvp_flash' needs q, k and v of one (batch, heads, tokens, head_dim) shape, not {list(shapes)}{where}"
    tokens, head_dim = shapes[0][2], shapes[0][3]
    if head_dim not in JVP_FLASH_HEAD_DIMS:
        dims = ", ".join(map(str, JVP_FLASH_HEAD_DIMS))
        return (f"attention kernel 'jvp_flash' supports head dims {dims}, not {head_dim} (hidden_size / num_heads)"
                f"{where}")
    if tokens < JVP_FLASH_MIN_TOKENS or tokens % 2:
        return (f"attention kernel 'jvp_flash' needs an even number of at least {JVP_FLASH_MIN_TOKENS} tokens per "
                f"attention, not {tokens}{where}")
    return None


def _jvp_flash_unsupported(q: Tensor, k: Tensor, v: Tensor) -> str | None:
    dtypes = {q.dtype, k.dtype, v.dtype}
    if len(dtypes) > 1:
        return f"attention kernel 'jvp_flash' needs q, k and v of one dtype, not {sorted(map(str, dtypes))}; use attention: math."
    devices = {q.device.type, k.device.type, v.device.type}
    device = "cuda" if devices == {"cuda"} else ", ".join(sorted(devices - {"cuda"}))
    interpreted = device != "cuda" and jvp_flash_interpreted()  # asked only off CUDA: no cost on the GPU path
    return jvp_flash_problem(device, q.dtype, (tuple(q.shape), tuple(k.shape), tuple(v.shape)), interpreted=interpreted)


def _jvp_flash(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """jvp-flash-attention on (possibly dual) q, k, v.

    The package's plain ``attention`` (JVPAttn.fwd) hands the kernel no tangents, and its jvp rule then
    returns none: the tangent must go in through ``JVPAttn.fwd_dual``, which unpacks the dual tensors.
    An input without a tangent gets a zero one (fwd_dual needs all three)."""
    jvp_attn = _load_jvp_flash()
    tangents = [fwAD.unpack_dual(x).tangent for x in (q, k, v)]
    if all(t is None for t in tangents):
        return jvp_attn.fwd(q, k, v)
    if any(t is None for t in tangents):
        q, k, v = (x if t is not None else fwAD.make_dual(x, torch.zeros_like(x)) for x, t in zip((q, k, v), tangents))
    return jvp_attn.fwd_dual(q, k, v)


KERNELS["jvp_flash"] = AttentionKernel(
    fn=_jvp_flash, unavailable=_jvp_flash_unavailable, unsupported=_jvp_flash_unsupported, double_backward=False,
)
