"""The JVP attention kernel option (objective.jvp: {name: ..., attention: math | jvp_flash}), on a CPU.

(a) the default path is what it was: DiT's attention (now flowzoo's dispatcher) gives timm's outputs
bit for bit, and every analytic backend gives the same u and du/dt as on a DiT built from plain timm
Attention, agreeing with torch.func.jvp and a float64 central difference; (b) a kernel registered for
the test (math attention written out, with its own closed-form forward-mode rule) runs inside the JVP
only, never in the training forward, and its tangent equals the math JVP to float64 precision;
(c) jvp_flash on a CPU, without its package, on CPU tensors, or with double_backward is refused in one
sentence, and so is (d) an unknown kernel name; the CLI exits 2 with that one line.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Attention
from torch.nn.attention import SDPBackend, sdpa_kernel

import flowzoo.backbones.attention as attn_mod
from flowzoo.backbones import create_backbone
from flowzoo.backbones.attention import AttentionKernel, AttentionKernelError, jvp_attention, jvp_flash_problem
from flowzoo.backbones.dit import DiTAttention
from flowzoo.cli import main
from flowzoo.config import ConfigError
from flowzoo.objectives import create_objective
from flowzoo.objectives.jvp import double_backward_jvp, forward_mode_jvp, get_jvp_backend
from flowzoo.objectives.velocity import ConditionedVelocity

ANALYTIC = ("forward", "functorch", "double_backward")
B = 3


def one_sentence(message: str) -> None:
    assert "\n" not in message and message.endswith("."), message
    assert ". " not in message.replace("e.g. ", ""), message


def _dit(dtype=torch.float64):
    """DiT-tiny/2 cut to 2 blocks on 8x8x2 inputs (16 tokens, head dim 32), adaLN-Zero perturbed."""
    torch.manual_seed(0)
    net = create_backbone("DiT-tiny/2", input_size=8, in_channels=2, num_classes=3, depth=2).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))  # u is not identically zero, the tangent not trivial
    return net


def _plain_timm(net):
    """The same network with timm's own Attention (fused SDPA path) in every block: the code before."""
    old = copy.deepcopy(net)
    for block in old.blocks:
        plain = Attention(block.attn.qkv.in_features, num_heads=block.attn.num_heads, qkv_bias=True)
        plain.fused_attn = True
        plain.to(block.attn.qkv.weight.dtype).load_state_dict(block.attn.state_dict())  # strict: same names
        block.attn = plain
    return old


def _inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(B, 2, 8, 8, generator=g, dtype=dtype)
    v = torch.randn(B, 2, 8, 8, generator=g, dtype=dtype)
    t = torch.tensor([0.9, 0.6, 0.3], dtype=dtype)
    r = torch.tensor([0.1, 0.0, 0.25], dtype=dtype)
    y = torch.tensor([0, 2, 3])
    return z, v, r, t, y


def _func_jvp_math(net, z, v, r, t, y):
    """Reference: torch.func.jvp with SDPA forced onto the math kernel (no flowzoo code)."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        return torch.func.jvp(lambda z_, t_: net(z_, t_, t_ - r, y), (z, t), (v, torch.ones_like(t)))


# ---- (a) the default path -------------------------------------------------------------------------

def test_dit_attention_is_timm_attention_bit_for_bit():
    net = _dit(torch.float32)
    old = _plain_timm(net)
    assert all(isinstance(b.attn, DiTAttention) and isinstance(b.attn, Attention) for b in net.blocks)
    assert net.state_dict().keys() == old.state_dict().keys()
    net.load_state_dict(old.state_dict())  # an existing checkpoint loads strictly
    z, _, r, t, y = _inputs(torch.float32)
    for mode in (True, False):
        net.train(mode), old.train(mode)
        assert torch.equal(net(z, t, t - r, y), old(z, t, t - r, y))


@pytest.mark.parametrize("name", ANALYTIC)
def test_default_jvp_is_unchanged_and_equals_an_independent_one(name):
    net = _dit()
    old = _plain_timm(net)
    z, v, r, t, y = _inputs()
    u_new, d_new = get_jvp_backend(name)(ConditionedVelocity(net, y), z, r, t, v)
    u_math, d_math = get_jvp_backend({"name": name, "attention": "math"})(ConditionedVelocity(net, y), z, r, t, v)
    u_old, d_old = get_jvp_backend(name)(ConditionedVelocity(old, y), z, r, t, v)
    # exactly what the same backend computes on the network built from timm's Attention (the code before)
    assert torch.equal(u_new, u_old) and torch.equal(d_new, d_old)
    assert torch.equal(u_new, u_math) and torch.equal(d_new, d_math)
    # and the right numbers: torch.func.jvp on the math kernel, and a float64 central difference
    u_ref, d_ref = _func_jvp_math(old, z, v, r, t, y)
    assert d_ref.abs().max() > 1e-2
    torch.testing.assert_close(u_new, u_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_new, d_ref, rtol=1e-10, atol=1e-12)
    eps = 1e-6
    with torch.no_grad():
        fd = (old(z + eps * v, t + eps, t + eps - r, y) - old(z - eps * v, t - eps, t - eps - r, y)) / (2 * eps)
    assert float((d_new - fd).abs().max() / fd.abs().max()) < 1e-7


# ---- (b) a kernel registered for the test ---------------------------------------------------------

class HandAttention(torch.autograd.Function):
    """softmax(q k^T s) v written out, with its closed-form forward-mode rule:
    dO = P dV + (P * (dS - rowsum(P * dS))) V,  dS = (dQ K^T + Q dK^T) s."""

    @staticmethod
    def forward(q, k, v):
        p = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)
        return p @ v

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_forward(*inputs)

    @staticmethod
    def jvp(ctx, dq, dk, dv):
        q, k, v = ctx.saved_tensors
        dq, dk, dv = (torch.zeros_like(x) if d is None else d for x, d in zip((q, k, v), (dq, dk, dv)))
        scale = q.shape[-1] ** -0.5
        p = (q @ k.transpose(-2, -1) * scale).softmax(-1)
        ds = (dq @ k.transpose(-2, -1) + q @ dk.transpose(-2, -1)) * scale
        dp = p * (ds - (p * ds).sum(-1, keepdim=True))
        return p @ dv + dp @ v


@pytest.fixture
def hand_kernel(monkeypatch):
    calls = []

    def fn(q, k, v):
        calls.append(q.shape)
        return HandAttention.apply(q, k, v)

    monkeypatch.setitem(attn_mod.KERNELS, "hand", AttentionKernel(fn=fn, double_backward=False))
    return calls


def test_hand_rule_is_the_math_jvp():
    g = torch.Generator().manual_seed(3)
    q, k, v, dq, dk, dv = (torch.randn(2, 2, 5, 4, generator=g, dtype=torch.float64) for _ in range(6))
    with sdpa_kernel(SDPBackend.MATH):
        ref = torch.func.jvp(F.scaled_dot_product_attention, (q, k, v), (dq, dk, dv))
    out = torch.func.jvp(HandAttention.apply, (q, k, v), (dq, dk, dv))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["forward", "functorch"])
def test_registered_kernel_runs_inside_the_jvp_only(name, hand_kernel):
    net = _dit()
    z, v, r, t, y = _inputs()
    expected = net(z, t, t - r, y)
    out = net(z.requires_grad_(), t, t - r, y)  # the training forward and its backward
    out.square().sum().backward()
    assert hand_kernel == [] and torch.equal(out.detach(), expected)

    u_math, d_math = get_jvp_backend(name)(ConditionedVelocity(net, y), z.detach(), r, t, v)
    u_hand, d_hand = get_jvp_backend({"name": name, "attention": "hand"})(ConditionedVelocity(net, y), z.detach(), r, t, v)
    assert len(hand_kernel) == len(net.blocks)  # every attention of the JVP went through the kernel
    torch.testing.assert_close(u_hand, u_math, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(d_hand, d_math, rtol=1e-10, atol=1e-12)
    assert attn_mod._active is None  # the scope is closed: the next training forward is SDPA again
    net(z, t, t - r, y)
    assert len(hand_kernel) == len(net.blocks)


def test_registered_kernel_in_a_meanflow_step_gives_the_math_target_and_gradients(hand_kernel):
    net = _dit()
    z, _, _, _, y = _inputs()
    runs = []
    for jvp in ("forward", {"name": "forward", "attention": "hand"}):
        objective = create_objective("meanflow", net, label_dropout=0.0, fm_ratio=0.0, jvp=jvp)
        drawn = objective.draw(z, y, 0, torch.Generator().manual_seed(2))
        loss, terms = objective.loss_terms(z, drawn, 0)
        grads = torch.autograd.grad(loss, list(net.parameters()))
        runs.append((terms.target.du_dt, terms.target.u_tgt, loss, *grads))
    assert len(hand_kernel) == len(net.blocks)  # the JVP only; the training forward and backward kept SDPA
    assert runs[0][0].abs().max() > 1e-2
    for hand, math in zip(runs[1], runs[0]):
        torch.testing.assert_close(hand, math, rtol=1e-9, atol=1e-12)


def test_a_kernel_without_double_backward_is_refused_by_double_backward(hand_kernel):
    with pytest.raises(AttentionKernelError, match="'double_backward'.*forward or functorch") as err:
        get_jvp_backend({"name": "double_backward", "attention": "hand"})
    one_sentence(str(err.value))
    net = _dit()
    z, v, r, t, y = _inputs()
    with pytest.raises(AttentionKernelError, match="cannot do"):
        double_backward_jvp(ConditionedVelocity(net, y), z, r, t, v, attention="hand")
    assert hand_kernel == [] and attn_mod._active is None


def test_a_kernel_refusing_its_tensors_leaves_no_scope_behind(monkeypatch):
    monkeypatch.setitem(attn_mod.KERNELS, "picky", AttentionKernel(
        fn=HandAttention.apply, unsupported=lambda q, k, v: "kernel 'picky' refuses these tensors; use attention: math."))
    net = _dit()
    z, v, r, t, y = _inputs()
    with pytest.raises(AttentionKernelError, match="refuses these tensors"):
        forward_mode_jvp(ConditionedVelocity(net, y), z, r, t, v, attention="picky")
    assert attn_mod._active is None
    with jvp_attention("picky"), jvp_attention("math"):  # a math scope inside another kernel's is math
        torch.func.jvp(lambda z_: net(z_, t, t - r, y), (z,), (v,))


# ---- (c) jvp_flash refusals -----------------------------------------------------------------------

JVP_FLASH = {"name": "forward", "attention": "jvp_flash"}


def test_jvp_flash_without_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the interpreter's case: tests/test_jvp_flash_interpreter.py
    with pytest.raises(ConfigError, match="CUDA GPUs only.*use attention: math") as err:
        get_jvp_backend(JVP_FLASH)
    one_sentence(str(err.value))
    with pytest.raises(ValueError, match="CUDA GPUs only"):  # and so is building the objective
        create_objective("meanflow", _dit(), jvp=JVP_FLASH)


def test_jvp_flash_without_the_package_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(attn_mod, "_jvp_flash_module", None)
    monkeypatch.setitem(sys.modules, "jvp_flash_attention", None)  # import fails as if not installed
    for spec in (JVP_FLASH, {"name": "functorch", "attention": "jvp_flash"}):
        with pytest.raises(AttentionKernelError, match=r"pip install 'flowzoo\[gpu\]'") as err:
            get_jvp_backend(spec)
        one_sentence(str(err.value))


def test_jvp_flash_refuses_cpu_tensors_at_the_first_call(monkeypatch):
    """With the package 'installed' (a stub, not run by Triton's interpreter) and CUDA 'available',
    construction passes; the first JVP sees CPU tensors and refuses before the kernel runs."""
    calls = []
    stub = types.ModuleType("jvp_flash_attention.jvp_attention")
    stub.JVPAttn = types.SimpleNamespace(fwd=lambda *a: calls.append(a), fwd_dual=lambda *a: calls.append(a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(attn_mod, "_jvp_flash_module", None)
    monkeypatch.setitem(sys.modules, "jvp_flash_attention", types.ModuleType("jvp_flash_attention"))
    monkeypatch.setitem(sys.modules, "jvp_flash_attention.jvp_attention", stub)
    net = _dit(torch.float32)
    z, _, _, _, y = _inputs(torch.float32)
    objective = create_objective("meanflow", net, label_dropout=0.0, fm_ratio=0.0, jvp=JVP_FLASH)
    drawn = objective.draw(z, y, 0, torch.Generator().manual_seed(2))
    with pytest.raises(AttentionKernelError, match="needs CUDA tensors, but the network runs on cpu") as err:
        objective.loss_terms(z, drawn, 0)
    one_sentence(str(err.value))
    assert calls == [] and attn_mod._active is None
    with pytest.raises(AttentionKernelError, match="double_backward"):
        get_jvp_backend({"name": "double_backward", "attention": "jvp_flash"})


def test_jvp_flash_tensor_constraints_are_one_sentence_each():
    ok = ((2, 12, 256, 64),) * 3
    assert jvp_flash_problem("cuda", torch.float32, ok) is None
    assert jvp_flash_problem("cuda", torch.bfloat16, ((2, 4, 32, 32),) * 3) is None
    assert jvp_flash_problem("cpu", torch.float32, ok, interpreted=True) is None  # Triton's interpreter
    assert jvp_flash_problem("cuda", torch.float16, ok, interpreted=True) is None
    cases = [
        (("cpu", torch.float32, ok), "needs CUDA tensors"),
        (("cuda", torch.float64, ok), "supports float16, bfloat16, float32, not float64"),
        (("cuda", torch.float32, ((2, 12, 256, 48),) * 3), "head dims 32, 64, 128, 256, not 48"),
        # the package accepts 16, but its kernels then fail their BLOCK_N <= HEAD_DIM static assert
        (("cuda", torch.bfloat16, ((2, 4, 32, 16),) * 3), "head dims 32, 64, 128, 256, not 16"),
        (("cuda", torch.float32, ((2, 12, 16, 64),) * 3), "at least 32 tokens per attention, not 16"),
        (("cuda", torch.float32, ((2, 12, 33, 64),) * 3), "not 33"),
        (("cuda", torch.float32, ((2, 12, 256, 64), (2, 12, 128, 64), (2, 12, 128, 64))), "of one"),
    ]
    cases = [(args, phrase, False) for args, phrase in cases] + [  # under Triton's interpreter (numpy: no bfloat16)
        (("cpu", torch.bfloat16, ok), "under Triton's interpreter supports float16, float32, not bfloat16", True),
        (("meta", torch.float32, ok), "needs CUDA tensors, but the network runs on meta", True),
    ]
    for args, phrase, interpreted in cases:
        message = jvp_flash_problem(*args, interpreted=interpreted)
        assert phrase in message, message
        one_sentence(message)


# ---- (d) unknown kernel names ---------------------------------------------------------------------

def test_an_unknown_kernel_is_refused_in_one_sentence():
    with pytest.raises(AttentionKernelError, match=r"unknown JVP attention kernel 'flash' \(did you mean 'jvp_flash'\?\); choose one of: jvp_flash, math") as err:
        get_jvp_backend({"name": "forward", "attention": "flash"})
    one_sentence(str(err.value))
    with pytest.raises(AttentionKernelError, match="unknown JVP attention kernel 'nope'; choose one of"):
        jvp_attention("nope")
    with pytest.raises(ValueError, match="takes no option"):  # the finite difference has no attention
        get_jvp_backend({"name": "finite_difference", "attention": "math"})


# ---- the CLI -------------------------------------------------------------------------------------

def _flowzoo(*args: str, capsys) -> tuple[int, str]:
    argv, sys.argv = sys.argv, ["flowzoo", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return code, capsys.readouterr().err


@pytest.mark.parametrize("kernel, phrase", [
    ("jvp_flash", "runs on CUDA GPUs only"),
    ("flsh", "unknown JVP attention kernel 'flsh'"),
])
def test_cli_refuses_in_one_line_with_exit_code_2(kernel, phrase, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    out = tmp_path / "run"
    code, err = _flowzoo("run", "--objective", "meanflow", "--set", f"objective.jvp={{name: forward, attention: {kernel}}}",
                         "--steps", "1", "--out", str(out), "--quiet", capsys=capsys)
    assert code == 2, err
    assert phrase in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (out / "checkpoints").exists()


def test_parity_check_skips_in_one_sentence_without_cuda():
    script = Path(__file__).parents[1] / "benchmarks" / "jvp_attention_parity.py"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 1 and done.stdout.strip().endswith("skipped.")
